"""Issue 15's GPU run: run.sh on a lent GPU, driver.py --dry-run anywhere (see driver.py)."""
