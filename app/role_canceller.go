package app

// cancellerComponents wires the erasure fan-out role.
func cancellerComponents(in *infra) ([]Component, error) {
	return nil, nil
}
