"""Every environment variable the settings read is documented in the README's table."""

import re
from pathlib import Path

from django.conf import settings

# Read only by the test suite, never by a deployment.
TEST_ONLY = {"CHATBASE_TEST_PROVIDERS_FROM_ENV", "CHATBASE_TEST_REDIS_PREFIX", "CHATBASE_SLOW_TESTS"}
_ENV_READ = re.compile(r"""env(?:\.\w+)?\(\s*["']([A-Z][A-Z0-9_]+)["']""")


def test_every_environment_variable_is_in_the_readme():
    base = Path(settings.BASE_DIR)
    read = set()
    for path in sorted((base / "chatbase" / "settings").glob("*.py")):
        read |= set(_ENV_READ.findall(path.read_text()))
    readme = (base / "README.md").read_text()
    undocumented = sorted(name for name in read - TEST_ONLY if f"`{name}`" not in readme)
    assert read, "no env() reads found: the pattern is out of date"
    assert not undocumented, f"add these to README.md's configuration table: {undocumented}"
