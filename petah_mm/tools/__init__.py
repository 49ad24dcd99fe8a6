"""The logic of the command-line tools under ``tools/``: each script there is a thin wrapper around ``main`` of
the module of the same name here, so that the tests import the tools' functions like any other module's.

The modules are grouped by job: :mod:`.studies` (training runs that answer a question), :mod:`.deployment`
(artifacts for devices and the model zoo), :mod:`.analysis` (numbers about models and machines) and
:mod:`.datagen` (generated datasets). Imports between them run one way: studies may use analysis.
"""
