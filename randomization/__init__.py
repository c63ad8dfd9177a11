"""Distributions over named simulator parameters, EPOpt and source-distribution adaptation."""
