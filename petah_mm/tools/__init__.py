"""The logic of the command-line tools under ``tools/``: each script there is a thin wrapper around ``main`` of
the module of the same name here, so that the tests import the tools' functions like any other module's."""
