"""The end-to-end demo (``hrm demo``, README's first command): data → training → registry → a new puzzle solved.
A job: imports the layers below it (core, serving, tracking, data, train)."""
