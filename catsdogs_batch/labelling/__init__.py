"""Labelling real photo folders: `catsdogs label` (table, sorting into folders), `review` (a
person decides, in a browser), `audit` (likely label errors) and `evaluate` (how good a model is
on labelled photos)."""
