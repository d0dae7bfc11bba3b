# unit tests: nn
