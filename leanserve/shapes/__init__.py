"""Model shapes (config.json files) shipped for `leanserve fit --model shape:NAME`: plan a 7B offline."""
