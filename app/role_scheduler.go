package app

import "github.com/spf13/cobra"

// schedulerComponents wires the delayed-message role.
func schedulerComponents(in *infra) ([]Component, error) {
	return nil, nil
}

// schedulerAdminCommands are `gdpr scheduler list|show|cancel`.
func (c *cli) schedulerAdminCommands() []*cobra.Command {
	return nil
}
