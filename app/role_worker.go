package app

// workerComponents wires the requests manager role: request intake from the
// bus, the worker pool, the notifier and the audit consumer.
func workerComponents(in *infra) ([]Component, error) {
	return nil, nil
}
