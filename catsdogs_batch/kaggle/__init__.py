"""Getting the data from Kaggle and giving it back: `catsdogs download` (download.py: the
competition's archives, fetched or imported, checked and unpacked), the Kaggle client
(api.py) and `catsdogs submit` (submit.py: upload a submission and read its score)."""
