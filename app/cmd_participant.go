package app

import "github.com/spf13/cobra"

// participantCommands is `gdpr example-participant`.
func (c *cli) participantCommands() []*cobra.Command {
	return nil
}
