"""Writes examples/quickstart.ipynb from examples/quickstart.py.

The script is the source: each line starting with `# %%` opens a code cell, `# %% [markdown]`
a text cell whose lines lose their leading `# `. Lines before the first marker (the script's
header comment) are left out. `--check` writes nothing and exits 1 when the committed notebook
differs from what the script gives.

    python examples/make_notebook.py          # regenerate
    python examples/make_notebook.py --check  # is the notebook in sync?
"""

import os
import sys

import nbformat

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "quickstart.py")
NOTEBOOK = os.path.join(HERE, "quickstart.ipynb")


def cells(source):
    """Splits percent-format source into (kind, text) pairs, kind 'code' or 'markdown'."""
    out, kind, lines = [], None, []

    def flush():
        if kind is not None:
            text = "\n".join(lines).strip("\n")
            if text:
                out.append((kind, text))

    for line in source.splitlines():
        if line.startswith("# %%"):
            flush()
            kind = "markdown" if "[markdown]" in line else "code"
            lines = []
        elif kind == "markdown":
            if line and line != "#" and not line.startswith("# "):
                raise ValueError(f"markdown cell line does not start with '# ': {line!r}")
            lines.append(line[2:])
        elif kind == "code":
            lines.append(line)
    flush()
    return out


def notebook(source):
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    for i, (kind, text) in enumerate(cells(source)):
        make = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
        nb.cells.append(make(text, id=f"cell-{i}"))
    return nb


def render(source):
    return nbformat.writes(notebook(source)) + "\n"


def main(argv):
    with open(SCRIPT, encoding="utf-8") as f:
        text = render(f.read())
    if "--check" in argv:
        current = open(NOTEBOOK, encoding="utf-8").read() if os.path.exists(NOTEBOOK) else ""
        if current != text:
            print(f"{NOTEBOOK} is out of date: run python examples/make_notebook.py", file=sys.stderr)
            return 1
        return 0
    with open(NOTEBOOK, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {NOTEBOOK}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
