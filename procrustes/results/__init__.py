"""Results: from the runs stored in results/ to the figures, tables and verdicts in figures/.

- `experiments`: the runs behind each notebook (the grid of each figure and table);
- `selection`: the validation-split selection of MFW's reconstructed choices (notebook 09);
- `claims`: each claim of the paper, its rule (fixed before the data) and its verdict;
- `tables`, `plots`, `figure_files`: tables, plots, and where their files go;
- `notebook`: what every notebook's first cell calls (parameters, figure folders, stripping outputs).

Imports training and the method, never the tooling."""
