"""Pipelines -> tables: the declarative specs (spec), the runner that extracts, trains and evaluates them
(runner, steps), and the tables and plots built from the run JSONs beside the papers' numbers (results,
reference)."""
