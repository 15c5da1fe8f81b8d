"""`pip install 'kubetune[operator]'` gives a working operator: it imports the contract
package, never the trainer, so no ML library and no template engine is loaded."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_VENV = ROOT / ".venv-operator"
# What the trainer needs and the operator image must not: importing any of these would
# crash-loop an operator installed from its extra.
TRAINER_ONLY = ("torch", "transformers", "peft", "accelerate", "rouge_score", "sacrebleu", "numpy", "jinja2",
                "datasets", "pandas", "pyarrow", "evaluate", "kubetune_trainer")

BLOCK_AND_IMPORT = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {TRAINER_ONLY!r}:
            raise ImportError('operator imported ' + name)
sys.meta_path.insert(0, Block())
import kubetune_operator.handlers, kubetune_operator.main, kubetune_api.crdgen
from kubetune_operator.main import main
try:
    main(['--help'])
except SystemExit as done:
    assert done.code == 0, done.code
"""


def test_operator_starts_with_the_trainer_stack_blocked():
    result = subprocess.run([sys.executable, "-c", BLOCK_AND_IMPORT], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "usage: kubetune-operator" in result.stdout


def test_operator_venv_from_the_extra_alone_has_no_trainer_stack():
    """make install builds .venv-operator with `pip install -e '.[operator]'` only."""
    python = OPERATOR_VENV / "bin" / "python"
    assert python.exists(), f"{OPERATOR_VENV} is missing: run `make install`"
    probe = ("import importlib.util, json; "
             f"print(json.dumps([m for m in {TRAINER_ONLY[:-1]!r} if importlib.util.find_spec(m)]))")
    installed = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    assert installed == "[]"
    result = subprocess.run([str(OPERATOR_VENV / "bin" / "kubetune-operator"), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--metrics-port" in result.stdout, result.stderr
