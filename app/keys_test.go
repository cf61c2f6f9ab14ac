package app

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/config/configtest"
	"github.com/gdpr-oss/gdpr/modules/api"
	"github.com/gdpr-oss/gdpr/modules/report"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

const publicURL = "https://privacy.example.com"

// runBinary runs the gdpr binary to its end and returns its exit code and
// its stdout and stderr apart.
func runBinary(t *testing.T, bin string, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), out.String(), errOut.String()
	}
	require.NoError(t, err)
	return 0, out.String(), errOut.String()
}

// generatedKeys runs `gdpr keys generate` and returns its variables.
func generatedKeys(t *testing.T, bin string) map[string]string {
	t.Helper()
	code, out, errOut := runBinary(t, bin, os.Environ(), "keys", "generate")
	require.Equal(t, 0, code, "stderr: %s", errOut)
	keys := map[string]string{}
	for line := range strings.Lines(out) {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		require.True(t, ok, "line %q", line)
		keys[k] = v
	}
	require.Len(t, keys, 2, "output: %s", out)
	return keys
}

// TestRolesRefuseDevelopmentKeysOnAPublicURL runs the binary with
// serve.public_url outside loopback: every role exits 2 before connecting
// to anything while a key is the public default or too short, naming the
// setting on stderr, and starts with keys from `gdpr keys generate`.
func TestRolesRefuseDevelopmentKeysOnAPublicURL(t *testing.T) {
	t.Parallel()
	bin := testkit.Build(t)
	keys := generatedKeys(t, bin)
	again := generatedKeys(t, bin)
	for name, k := range keys {
		require.NotEqual(t, again[name], k, "%s is fresh on every run", name)
	}
	download, encryption := keys["GDPR_SERVE_DOWNLOAD_KEY"], keys["GDPR_REPORT_ENCRYPTION_KEY"]
	require.GreaterOrEqual(t, len(download), 32)
	raw, err := report.ParseEncryptionKey(encryption)
	require.NoError(t, err)
	require.Len(t, raw, 32)

	// Nothing listens on port 1: a role that got past the check would keep
	// retrying to connect (and time out here) rather than use shared services.
	public := append(os.Environ(), "GDPR_SERVE_PUBLIC_URL="+publicURL,
		"GDPR_POSTGRES_DSN=postgres://root@127.0.0.1:1/none", "GDPR_AMQP_URL=amqp://guest:guest@127.0.0.1:1/", "GDPR_REDIS_ADDR=127.0.0.1:1",
		// canceller and all would refuse an empty participant list first.
		"GDPR_CANCELLER_NO_PARTICIPANTS=true")
	for _, role := range []string{"serve", "worker", "scheduler", "canceller", "all"} {
		t.Run(role+" with the default keys", func(t *testing.T) {
			t.Parallel()
			code, stdout, stderr := runBinary(t, bin, public, role)
			require.Equal(t, 2, code, "stdout: %s\nstderr: %s", stdout, stderr)
			require.Contains(t, stderr, "serve.download_key must not be the public development key when serve.public_url ("+publicURL+")")
			require.Contains(t, stderr, "report.encryption_key must not be the public development key")
			require.NotContains(t, stdout, `"msg":"starting"`)
		})
	}
	cases := []struct {
		name string
		env  []string
		want string
	}{
		{"a short download key", []string{"GDPR_SERVE_DOWNLOAD_KEY=0123456789abcdef0123", "GDPR_REPORT_ENCRYPTION_KEY=" + encryption},
			"serve.download_key must be at least 32 characters when serve.public_url"},
		{"the development download key as a previous key", []string{"GDPR_SERVE_DOWNLOAD_KEY=" + download, "GDPR_REPORT_ENCRYPTION_KEY=" + encryption,
			"GDPR_SERVE_PREVIOUS_DOWNLOAD_KEYS=" + download + "-old," + api.DevDownloadKey},
			"serve.previous_download_keys[1] must not be the public development key"},
		{"the development encryption key in upper-case hex", []string{"GDPR_SERVE_DOWNLOAD_KEY=" + download,
			"GDPR_REPORT_ENCRYPTION_KEY=" + strings.ToUpper(report.DevEncryptionKey)},
			"report.encryption_key must not be the public development key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, stdout, stderr := runBinary(t, bin, slices.Concat(public, tc.env), "serve")
			require.Equal(t, 2, code, "stdout: %s\nstderr: %s", stdout, stderr)
			require.Contains(t, stderr, tc.want)
			require.Equal(t, 1, strings.Count(stderr, " must "), "only the bad setting is named: %s", stderr)
		})
	}

	t.Run("keys ids names each encryption key", func(t *testing.T) {
		t.Parallel()
		code, stdout, stderr := runBinary(t, bin, append(os.Environ(), "GDPR_REPORT_ENCRYPTION_KEY="+encryption,
			"GDPR_REPORT_PREVIOUS_ENCRYPTION_KEYS="+report.DevEncryptionKey), "keys", "ids")
		require.Equal(t, 0, code, "stderr: %s", stderr)
		dev, err := report.ParseEncryptionKey(report.DevEncryptionKey)
		require.NoError(t, err)
		require.Equal(t, report.KeyID(raw)+" report.encryption_key\n"+report.KeyID(dev)+" report.previous_encryption_keys[0]\n", stdout)
	})

	t.Run("serve with generated keys starts", func(t *testing.T) {
		t.Parallel()
		env, admin := roleEnv(t, configtest.Config(t))
		env = append(env, "GDPR_SERVE_PUBLIC_URL="+publicURL, "GDPR_SERVE_DOWNLOAD_KEY="+download, "GDPR_REPORT_ENCRYPTION_KEY="+encryption,
			// A previous encryption key may still be the public one: it only reads.
			"GDPR_REPORT_PREVIOUS_ENCRYPTION_KEYS="+report.DevEncryptionKey)
		p := start(t, bin, env, "serve")
		p.waitReady(t, admin["serve"])
		p.signal(t, syscall.SIGTERM)
		require.Equal(t, 0, p.exitCode(t, exitBound))
	})
}
