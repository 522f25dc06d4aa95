"""One module per backend; each fills its row of the table in `pyai.dispatch`."""
