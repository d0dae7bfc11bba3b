# unit tests: strategy
