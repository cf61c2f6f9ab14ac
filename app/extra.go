package app

import "github.com/spf13/cobra"

// extraCommands are operator commands added by modules (reconcile, timeline,
// example-participant).
func (c *cli) extraCommands() []*cobra.Command {
	return nil
}
