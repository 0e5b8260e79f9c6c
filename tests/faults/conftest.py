import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from faultkit import no_leftovers  # noqa: E402,F401 - the autouse fixture
