"""Load testing over HTTP: the Locust users (locustfile.py), the headless runner, its summary and plot."""
