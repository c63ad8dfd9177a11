"""The ground floor: errors, atomic file writes, YAML reading and field validation, optional extras, shipped files
and the trajectory-log format. It imports no other s2r package, so every package may import it."""
