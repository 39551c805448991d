"""Operations: running trading days (paper-run, replay), and later the safety jobs."""
