"""The `catsdogs` command line (cli) and what its commands do beside the stages: the demo, ranking
experiments, and the data review."""
