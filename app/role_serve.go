package app

// serveComponents wires the HTTP intake role.
func serveComponents(in *infra) ([]Component, error) {
	return nil, nil
}
