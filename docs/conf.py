"""Sphinx configuration of the pyro_sculpt documentation.

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html`` (needs the ``docs`` extra).
"""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "pyro_sculpt"
author = "pyro_sculpt developers"
copyright = "pyro_sculpt developers, Apache-2.0"
release = "0.1.0"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_nb",
]

# Markdown pages (MyST) and the tutorials, jupytext percent-format scripts read as notebooks. The tutorials are not
# executed by the build: run at full size (``PYRO_SCULPT_TUTORIAL_SIZE=full``) they write the figures their pages
# show into docs/tutorials/figures/, and the test suite runs them at their tiny size.
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".py": "myst-nb"}
nb_custom_formats = {".py": ["jupytext.reads", {"fmt": "py:percent"}]}
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

exclude_patterns = ["_build", "conf.py", "Thumbs.db", ".DS_Store", "tutorials/figures"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
autoclass_content = "both"
# Overrides of torch and Pyro methods without a docstring of their own are left out (their inherited docstrings
# are not ours, and some are not valid reST).
autodoc_inherit_docstrings = False

html_theme = "furo"
html_title = "pyro_sculpt"
