package app

import (
	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"
)

func (c *cli) configCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Inspect the configuration",
	}
	printCmd := &cobra.Command{
		Use:   "print",
		Short: "Print the effective configuration as YAML, secrets masked",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := c.load(cmd)
			if err != nil {
				return err
			}
			enc := yaml.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent(2)
			if err := enc.Encode(cfg.Masked()); err != nil {
				return err
			}
			return enc.Close()
		},
	}
	cmd.AddCommand(printCmd)
	return cmd
}
