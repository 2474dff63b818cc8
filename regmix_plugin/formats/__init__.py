"""One module per artefact: its dataclass, its atomic writer, its reader and its validation.

Commands import these; these never import commands.
"""
