"""README.md from nbs/index.ipynb without Quarto: run it, drop `#| hide` cells and `#|` lines, export markdown."""
import re, sys
from pathlib import Path
import nbformat
from nbclient import NotebookClient
from nbconvert import MarkdownExporter

root = Path(__file__).resolve().parent.parent
nb = nbformat.read(root / "nbs" / "index.ipynb", as_version=4)
NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(root / "nbs")}}).execute()
cells = []
for c in nb.cells:
    if c.cell_type == "code":
        if re.search(r"^#\|\s*hide\b", c.source, re.M): continue
        c.source = "\n".join(l for l in c.source.splitlines() if not l.startswith("#|")).strip()
    cells.append(c)
nb.cells = cells
body, _ = MarkdownExporter().from_notebook_node(nb)
(root / "README.md").write_text("<!-- generated from nbs/index.ipynb by `make readme`: edit the notebook -->\n\n" + body.lstrip())
print("README.md written", file=sys.stderr)
