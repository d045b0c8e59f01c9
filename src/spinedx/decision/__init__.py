"""Decision support on top of the probability: calibration, conformal refer, domain check, the decision."""
