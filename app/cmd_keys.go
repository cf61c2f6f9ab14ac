package app

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"

	"github.com/spf13/cobra"
)

func keysCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Make secret keys",
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
	return cmd
}
