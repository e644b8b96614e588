"""One module per benchmark: read the data files, build prompts, score answers. No HTTP here."""
