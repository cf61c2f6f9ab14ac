package app

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/gdpr-oss/gdpr/modules/report"
)

func (c *cli) keysCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Make secret keys; show the ids of the report encryption keys",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "generate",
		Short: "Print a fresh download key and report encryption key as environment variables",
		Long: `Print a fresh serve.download_key and report.encryption_key, 32 random bytes
each, as GDPR_SERVE_DOWNLOAD_KEY=... and GDPR_REPORT_ENCRYPTION_KEY=... lines
for a secret store or an environment file. Nothing is read or written besides.
To rotate, move the current keys to serve.previous_download_keys and
report.previous_encryption_keys first (docs/operations.md).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			download, encryption := make([]byte, 32), make([]byte, 32)
			if _, err := rand.Read(download); err != nil {
				return fmt.Errorf("generating keys: %w", err)
			}
			if _, err := rand.Read(encryption); err != nil {
				return fmt.Errorf("generating keys: %w", err)
			}
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "GDPR_SERVE_DOWNLOAD_KEY=%s\nGDPR_REPORT_ENCRYPTION_KEY=%s\n",
				base64.RawURLEncoding.EncodeToString(download), hex.EncodeToString(encryption))
			return err
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "ids",
		Short: "Print the key id of each configured report encryption key",
		Long: `Print the key id of report.encryption_key and of each of
report.previous_encryption_keys. A stored report names the id of the key it
was encrypted with in its header (bytes 13 to 20 of <id>.zip.enc), so a
previous key can be removed once no stored report names it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := c.load(cmd)
			if err != nil {
				return err
			}
			keys, err := cfg.Report.Keys()
			if err != nil {
				return err
			}
			for i, k := range keys {
				setting := "report.encryption_key"
				if i > 0 {
					setting = "report.previous_encryption_keys[" + strconv.Itoa(i-1) + "]"
				}
				if _, err := fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", report.KeyID(k), setting); err != nil {
					return err
				}
			}
			return nil
		},
	})
	return cmd
}
