package config

// Notify configures outgoing email.
type Notify struct {
	SMTPHost string `yaml:"smtp_host"`
	SMTPPort int    `yaml:"smtp_port"`
	// TLS is none, starttls or tls.
	TLS      string `yaml:"tls"`
	Username string `yaml:"username"`
	Password string `yaml:"password" secret:"true"`
	From     string `yaml:"from"`
}

func defaultNotify() Notify {
	return Notify{SMTPHost: "127.0.0.1", SMTPPort: 1025, TLS: "none", From: "privacy@example.com"}
}

func (n Notify) validate() error {
	switch {
	case n.SMTPHost == "":
		return invalid("notify.smtp_host", "must be set")
	case n.SMTPPort < 1 || n.SMTPPort > 65535:
		return invalid("notify.smtp_port", "must be a port number, got %d", n.SMTPPort)
	case n.TLS != "none" && n.TLS != "starttls" && n.TLS != "tls":
		return invalid("notify.tls", "must be none, starttls or tls, got %q", n.TLS)
	case n.From == "":
		return invalid("notify.from", "must be set")
	}
	return nil
}
