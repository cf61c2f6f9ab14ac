package app

import "github.com/spf13/cobra"

// opsCommands are `gdpr reconcile` and `gdpr timeline`.
func (c *cli) opsCommands() []*cobra.Command {
	return nil
}
