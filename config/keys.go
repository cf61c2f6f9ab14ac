package config

import (
	"bytes"
	"errors"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/gdpr-oss/gdpr/modules/api"
	"github.com/gdpr-oss/gdpr/modules/report"
)

// minPublicDownloadKeyLen is the shortest download key accepted when the
// service is reachable from outside: 32 characters of a generated key
// (`gdpr keys generate` makes 43) are far beyond guessing.
const minPublicDownloadKeyLen = 32

// CheckSecretKeys refuses the public development keys, and download keys too
// short for a service others can reach, when serve.public_url is not a
// loopback address: with a public key anyone could sign download links with
// any expiry, or decrypt stored reports offline. Roles call it at start; on
// loopback (development, tests) the defaults stay usable.
//
// A previous encryption key may still be the development key: reports
// sealed with it are no better protected either way, and keeping it lets
// them open while an installation moves to a secret key.
func (c Config) CheckSecretKeys() error {
	if LoopbackURL(c.Serve.PublicURL) {
		return nil
	}
	why := "when serve.public_url (" + c.Serve.PublicURL + ") is not a loopback address; make one with `gdpr keys generate`"
	var errs []error
	downloadKey := func(setting, key string) {
		switch {
		case key == api.DevDownloadKey:
			errs = append(errs, invalid(setting, "must not be the public development key %s", why))
		case len(key) < minPublicDownloadKeyLen:
			errs = append(errs, invalid(setting, "must be at least %d characters %s", minPublicDownloadKeyLen, why))
		}
	}
	downloadKey("serve.download_key", c.Serve.DownloadKey)
	for i, k := range c.Serve.PreviousDownloadKeys {
		downloadKey("serve.previous_download_keys["+strconv.Itoa(i)+"]", k)
	}
	dev, _ := report.ParseEncryptionKey(report.DevEncryptionKey)
	// Compared decoded: the same key spelled in base64 or upper-case hex is still public.
	if key, err := report.ParseEncryptionKey(c.Report.EncryptionKey); err == nil && bytes.Equal(key, dev) {
		errs = append(errs, invalid("report.encryption_key", "must not be the public development key %s", why))
	}
	return errors.Join(errs...)
}

// LoopbackURL reports whether raw is a URL whose host is a loopback address
// (127.0.0.0/8, ::1) or the name localhost, which only this machine reaches.
func LoopbackURL(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil {
		return false
	}
	host := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
