"""`locust -f loadtest/locustfile.py --host URL` from a checkout: the users live in the package
(leanserve/loadtest/locustfile.py) so that `leanserve loadtest` finds them after a pip install."""

from leanserve.loadtest.locustfile import ChatUser, LLMUser  # noqa: F401  (Locust collects User classes here)
