package app

import "github.com/spf13/cobra"

// extraCommands are operator commands added by modules.
func (c *cli) extraCommands() []*cobra.Command {
	return append(append(c.opsCommands(), c.participantCommands()...), c.deadLetterCommand(), c.retentionCommand(), c.demoCommand())
}
