"""Where the tests find the repository, their support scripts, the sample logs and the shipped spaces."""
from pathlib import Path

SUPPORT = Path(__file__).resolve().parent
TESTS = SUPPORT.parent
REPO = TESTS.parent
LOGS = TESTS / "data" / "logs"
SPACES = REPO / "search_spaces"
