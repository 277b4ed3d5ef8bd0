"""The project both servers serve in the benchmark: same code, same settings, same callables."""
