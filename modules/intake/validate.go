package intake

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"regexp"
	"strings"
	"time"

	"github.com/gdpr-oss/gdpr/modules/deadline"
	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/strictjson"
)

// Limits on identifiers; generous for real ids and addresses, small enough
// that a key or a log of sizes stays bounded.
const (
	maxSubjectIDLen = event.MaxSubjectIDLen
	maxEmailLen     = event.MaxEmailLen
)

// ErrInvalid marks bad input; errors.As it to a *FieldError for the field.
var ErrInvalid = errors.New("intake: invalid input")

// FieldError names the input field (a dotted JSON path, "body", or a header
// name) that made a request invalid.
type FieldError struct {
	Field   string
	Message string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Message }

// Is makes errors.Is(err, ErrInvalid) hold for every field error.
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }

func fieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// Submission is a validated data subject request as a caller submitted it.
type Submission struct {
	Type    string
	Subject event.Subject
	// Regulation is the caller's choice of clock (deadline.Regulation); empty
	// means the caller's configured one, or gdpr.
	Regulation string
	// Verification is how the caller verified the subject (nil: not said).
	Verification *event.Verification
	// Locale is the language of the subject's emails ("" is the default).
	Locale string
	// Receipt asks for a receipt email (set by the self-service page).
	Receipt bool
}

// wire is the JSON body of POST /v1/requests. A pointer tells a missing
// member from an empty one; the subject is decoded on its own so that its
// errors name "subject.<member>".
type wire struct {
	Type         *string         `json:"type"`
	Subject      json.RawMessage `json:"subject"`
	Verification json.RawMessage `json:"verification"`
	Locale       *string         `json:"locale"`
	Regulation   *string         `json:"regulation"`
}

type wireVerification struct {
	Method     *string `json:"method"`
	VerifiedAt *string `json:"verified_at"`
}

type wireSubject struct {
	ID          *string            `json:"id"`
	Email       *string            `json:"email"`
	Phone       *string            `json:"phone"`
	Identifiers *map[string]string `json:"identifiers"`
}

// Parse decodes and validates a request body. Every error is a *FieldError.
func Parse(body []byte) (Submission, error) {
	var w wire
	if err := decodeStrict(body, &w, ""); err != nil {
		return Submission{}, err
	}
	var s Submission
	switch {
	case w.Type == nil:
		return s, fieldErr("type", "is required")
	case *w.Type != event.KindAccess && *w.Type != event.KindErasure:
		return s, fieldErr("type", "must be %q or %q", event.KindAccess, event.KindErasure)
	}
	s.Type = *w.Type
	if w.Regulation != nil {
		if _, err := deadline.Parse(*w.Regulation); err != nil || *w.Regulation == "" {
			return s, fieldErr("regulation", "must be one of gdpr, ccpa, lgpd")
		}
		s.Regulation = *w.Regulation
	}
	if len(w.Subject) == 0 || string(w.Subject) == "null" {
		return s, fieldErr("subject", "is required")
	}
	var ws wireSubject
	if err := decodeStrict(w.Subject, &ws, "subject"); err != nil {
		return s, err
	}
	if ws.ID != nil {
		if err := checkSubjectID(*ws.ID); err != nil {
			return s, err
		}
		s.Subject.ID = *ws.ID
	}
	if ws.Email != nil {
		email, err := checkEmail(*ws.Email)
		if err != nil {
			return s, err
		}
		s.Subject.Email = email
	}
	if ws.Phone != nil {
		phone, err := NormalizePhone(*ws.Phone)
		if err != nil {
			return s, fieldErr("subject.phone", "%s", err)
		}
		s.Subject.Phone = phone
	}
	if ws.Identifiers != nil {
		ids, err := checkIdentifiers(*ws.Identifiers)
		if err != nil {
			return s, err
		}
		s.Subject.Identifiers = ids
	}
	if s.Subject.Empty() {
		return s, fieldErr("subject", "needs at least one of id, email, phone or identifiers")
	}
	if len(w.Verification) > 0 && string(w.Verification) != "null" {
		v, err := parseVerification(w.Verification)
		if err != nil {
			return s, err
		}
		s.Verification = v
	}
	if w.Locale != nil {
		if !localePattern.MatchString(*w.Locale) {
			return s, fieldErr("locale", "must be a language tag such as \"en\" or \"de-AT\"")
		}
		s.Locale = strings.ToLower(*w.Locale)
	}
	return s, nil
}

// Verification method names are short tokens so that they can be stored and
// audited as they are; verified_at may lie a little ahead for clock skew.
var (
	methodPattern = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,31}$`)
	localePattern = regexp.MustCompile(`^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})?$`)
)

const maxVerificationSkew = 5 * time.Minute

func parseVerification(raw []byte) (*event.Verification, *FieldError) {
	var wv wireVerification
	if err := decodeStrict(raw, &wv, "verification"); err != nil {
		return nil, err
	}
	switch {
	case wv.Method == nil:
		return nil, fieldErr("verification.method", "is required")
	case !methodPattern.MatchString(*wv.Method):
		return nil, fieldErr("verification.method", "must be a lower-case word such as \"session\", \"email\" or \"document\"")
	case wv.VerifiedAt == nil:
		return nil, fieldErr("verification.verified_at", "is required")
	}
	at, err := time.Parse(time.RFC3339Nano, *wv.VerifiedAt)
	if err != nil {
		return nil, fieldErr("verification.verified_at", "must be an RFC 3339 timestamp")
	}
	if at.After(time.Now().Add(maxVerificationSkew)) {
		return nil, fieldErr("verification.verified_at", "must not be in the future")
	}
	return &event.Verification{Method: *wv.Method, VerifiedAt: at.UTC()}, nil
}

// NewSubmission validates a request as the self-service form gives it (an
// email address, optionally an account id; "" is absent) by the same rules
// as Parse.
func NewSubmission(kind, id, email string) (Submission, error) {
	s := Submission{Type: kind}
	if kind != event.KindAccess && kind != event.KindErasure {
		return s, fieldErr("type", "must be %q or %q", event.KindAccess, event.KindErasure)
	}
	if id != "" {
		if err := checkSubjectID(id); err != nil {
			return s, err
		}
		s.Subject.ID = id
	}
	if email != "" {
		e, err := checkEmail(email)
		if err != nil {
			return s, err
		}
		s.Subject.Email = e
	}
	if s.Subject.Email == "" {
		return s, fieldErr("subject.email", "is required")
	}
	return s, nil
}

// decodeStrict decodes exactly one JSON object into v, refusing unknown
// members, duplicate members and members named in another case than their
// field; errors name the member under prefix ("" is the whole body).
func decodeStrict(data []byte, v any, prefix string) *FieldError {
	var me *strictjson.MemberError
	if err := strictjson.Check(data, v); errors.As(err, &me) {
		field := me.Path
		if prefix != "" {
			field = prefix + "." + field
		}
		return fieldErr(field, "%s", me.Message)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err, prefix)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fieldErr(or(prefix, "body"), "must be a single JSON object")
	}
	return nil
}

func decodeError(err error, prefix string) *FieldError {
	path := func(member string) string {
		switch {
		case member == "":
			return or(prefix, "body")
		case prefix == "":
			return member
		}
		return prefix + "." + member
	}
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		return fieldErr(path(typeErr.Field), "must be a JSON %s", jsonKind(typeErr.Type.Kind().String()))
	case errors.As(err, &syntaxErr), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return fieldErr("body", "is not valid JSON")
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return fieldErr(path(strings.Trim(name, `"`)), "is not a known field")
	}
	return fieldErr(or(prefix, "body"), "is not valid JSON")
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func jsonKind(goKind string) string {
	switch goKind {
	case "struct", "map":
		return "object"
	case "ptr":
		return "value"
	}
	return goKind
}

// IdentifierNamePattern is the grammar of a named identifier (serve.
// identifiers): a lower-case word, so that {identifier.<name>} is a safe
// placeholder and the name can be stored and shown as it is.
var IdentifierNamePattern = regexp.MustCompile(`^[a-z][a-z0-9_]{0,31}$`)

const (
	maxIdentifiers        = 16
	maxIdentifierLen      = 256
	minPhoneDigits        = 8
	maxPhoneDigits        = 15
	phoneSeparatorsCutset = " -.()/\u00a0"
)

// NormalizePhone returns the E.164 form of a phone number written with the
// usual separators ("+49 151 1234-5678", "+49 (0)151..." is refused: the
// trunk zero is ambiguous): a '+', a country code not starting with 0, and
// 8 to 15 digits in all.
func NormalizePhone(s string) (string, error) {
	var b strings.Builder
	for i, r := range strings.TrimSpace(s) {
		switch {
		case r == '+' && i == 0:
			b.WriteRune(r)
		case r >= '0' && r <= '9':
			b.WriteRune(r)
		case strings.ContainsRune(phoneSeparatorsCutset, r):
		default:
			return "", errors.New("must be an E.164 phone number such as \"+4915112345678\"")
		}
	}
	n := b.String()
	digits := strings.TrimPrefix(n, "+")
	switch {
	case !strings.HasPrefix(n, "+"):
		return "", errors.New("must start with + and the country code (E.164)")
	case len(digits) < minPhoneDigits || len(digits) > maxPhoneDigits:
		return "", fmt.Errorf("must have %d to %d digits (E.164)", minPhoneDigits, maxPhoneDigits)
	case digits[0] == '0':
		return "", errors.New("must start with a country code, not 0 (E.164)")
	}
	return n, nil
}

// checkIdentifiers checks named identifiers' names against the grammar and
// their values by the subject id's rules; whether a name is declared is
// the Service's check (Options.Identifiers).
func checkIdentifiers(ids map[string]string) (map[string]string, *FieldError) {
	if len(ids) > maxIdentifiers {
		return nil, fieldErr("subject.identifiers", "must have at most %d members", maxIdentifiers)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(ids))
	for name, v := range ids {
		if !IdentifierNamePattern.MatchString(name) {
			return nil, fieldErr("subject.identifiers", "names must be lower-case words (%s)", IdentifierNamePattern)
		}
		if p := event.IdentifierProblem(v, maxIdentifierLen); p != "" {
			return nil, fieldErr("subject.identifiers."+name, "%s", p)
		}
		out[name] = v
	}
	return out, nil
}

// checkSubjectID applies the identifier rules (event.IdentifierProblem;
// docs/api.md states them).
func checkSubjectID(id string) *FieldError {
	if p := event.IdentifierProblem(id, maxSubjectIDLen); p != "" {
		return fieldErr("subject.id", "%s", p)
	}
	return nil
}

// checkEmail accepts a bare address (no display name, no comments) with a
// domain part, which is what a mailer can send to.
func checkEmail(s string) (string, *FieldError) {
	bad := fieldErr("subject.email", "must be a valid email address")
	if s == "" || len(s) > maxEmailLen {
		return "", bad
	}
	if p := event.IdentifierProblem(s, maxEmailLen); p != "" {
		return "", fieldErr("subject.email", "%s", p)
	}
	addr, err := mail.ParseAddress(s)
	if err != nil || addr.Name != "" || addr.Address != s {
		return "", bad
	}
	local, domain, ok := strings.Cut(s, "@")
	if !ok || local == "" || domain == "" || strings.HasPrefix(domain, "[") || !strings.Contains(domain, ".") ||
		strings.HasPrefix(domain, ".") || strings.HasSuffix(domain, ".") {
		return "", bad
	}
	// Domains are case-insensitive (RFC 5321 2.4), so Ann@EXAMPLE.com and
	// Ann@example.com reach the same mailbox and must reach the same
	// participants' rows; the local part may be case-sensitive and stays.
	return local + "@" + strings.ToLower(domain), nil
}

// fingerprint identifies a submission's content for idempotency: the same
// request written with other whitespace or member order is the same request.
// It is kept in Redis for serve.idempotency_ttl, so it is an HMAC under a
// server key (fingerprintKey): a plain hash of an address is reversed by
// hashing candidate addresses, a keyed one is not without the key.
func (s Submission) fingerprint(key []byte) string {
	var method string
	if s.Verification != nil {
		method = s.Verification.Method
	}
	raw, _ := json.Marshal(struct {
		Type        string            `json:"t"`
		ID          string            `json:"i"`
		Email       string            `json:"e"`
		Phone       string            `json:"p,omitempty"`
		Identifiers map[string]string `json:"n,omitempty"`
		Method      string            `json:"v,omitempty"`
		Locale      string            `json:"l,omitempty"`
		Regulation  string            `json:"r,omitempty"`
	}{s.Type, s.Subject.ID, s.Subject.Email, s.Subject.Phone, s.Subject.Identifiers, method, s.Locale, s.Regulation})
	h := hmac.New(sha256.New, key)
	h.Write(raw)
	return hex.EncodeToString(h.Sum(nil))
}

// fingerprintKey derives the fingerprint key from a download key, so no
// second secret has to be configured and rotated.
func fingerprintKey(downloadKey []byte) []byte {
	h := hmac.New(sha256.New, downloadKey)
	h.Write([]byte("gdpr intake idempotency fingerprint v1"))
	return h.Sum(nil)
}
