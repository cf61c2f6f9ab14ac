// Package conformance checks a running erasure participant, written in any
// language, against the protocol of docs/protocol.md: it sends the
// participant real commands for made-up subjects (a well-formed one, a
// duplicate, a replay after confirmation, a re-send, malformed ones and one
// of an unsupported version) and reports which rules the answers keep.
//
// It speaks AMQP itself, beside the bus package, because it has to see what
// bus hides: delivery modes, raw timestamps, dead letters of other consumers.
package conformance

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/gdpr-oss/gdpr/docs"
	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/participant"
	"github.com/gdpr-oss/gdpr/modules/trace"
)

// SubjectPrefix starts the id of every made-up subject the check sends, so
// the participant's operators can tell the check's commands from real ones.
const SubjectPrefix = "gdpr-check-"

// madeUp is a subject nobody holds, with both identifiers, so that a
// participant that finds people by only one of them has what it needs and
// answers not_found (cannot_erase would be right for a subject without it).
func madeUp() event.Subject {
	id := SubjectPrefix + uuid.NewString()
	return event.Subject{ID: id, Email: id + "@conformance.invalid"}
}

// Options tune a check.
type Options struct {
	// Timeout is how long each step waits for the participant's answer; default 30s.
	Timeout time.Duration
	// Settle is how long each step goes on listening after the answer, to
	// catch a second confirmation; default 2s.
	Settle time.Duration
}

// Result is one rule as one step of the check found it.
type Result struct {
	// Step is the case sent: "command", "duplicate", ...
	Step string
	// Rule is what the protocol asks, as a sentence.
	Rule string
	// Must is true for a rule whose breach breaks the protocol; false for
	// a recommendation.
	Must bool
	// Kept reports whether the participant kept the rule; Skipped that the
	// step could not check it (an earlier rule it depends on was broken).
	Kept    bool
	Skipped bool
	// Detail says what was seen.
	Detail string
}

// Report is the outcome of a check.
type Report struct {
	Participant string
	Queue       string
	Results     []Result
}

// Broken returns the results of the must-rules the participant broke.
func (r Report) Broken() []Result {
	var out []Result
	for _, res := range r.Results {
		if res.Must && !res.Kept && !res.Skipped {
			out = append(out, res)
		}
	}
	return out
}

// seen is one message the check received: a confirmation, or a dead letter.
type seen struct {
	d    amqp.Delivery
	at   time.Time
	body event.ErasureConfirmed
	// valid is nil when the body matches erasure-confirmed.v1.json.
	valid error
}

type checker struct {
	conn   *bus.Conn
	name   string
	opts   Options
	pub    *bus.Publisher
	schema *jsonschema.Schema

	mu      sync.Mutex
	changed chan struct{}
	confs   []seen
	dead    []seen

	report Report
}

// Run checks participant name on conn's exchange (the configured amqp
// prefix). It declares the participant's queue as gdpr does, so commands
// wait there until the participant runs. The error is for a check that
// could not run at all; broken rules are in the report.
func Run(ctx context.Context, conn *bus.Conn, name string, opts Options) (Report, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.Settle <= 0 {
		opts.Settle = 2 * time.Second
	}
	schema, err := confirmationSchema()
	if err != nil {
		return Report{}, err
	}
	c := &checker{conn: conn, name: name, opts: opts, schema: schema, changed: make(chan struct{}),
		report: Report{Participant: name, Queue: conn.QueueName(erasureQueue(name))}}
	if err := conn.DeclareQueue(ctx, bus.Queue{Name: erasureQueue(name), Bindings: []string{event.TypeErasureCommand + "." + name}, Shared: true}); err != nil {
		return c.report, fmt.Errorf("declaring the participant's queue: %w", err)
	}
	ch, err := conn.Channel(ctx)
	if err != nil {
		return c.report, err
	}
	defer ch.Close()
	if err := c.listen(ch, conn.Exchange(), event.TypeErasureConfirmed, &c.confs); err != nil {
		return c.report, err
	}
	if err := c.listen(ch, conn.DeadLetterExchange(), "", &c.dead); err != nil {
		return c.report, err
	}
	c.pub = bus.NewPublisher(conn)
	defer c.pub.Close()
	if err := c.run(ctx); err != nil {
		return c.report, err
	}
	return c.report, nil
}

func erasureQueue(name string) string { return "participant." + name }

func confirmationSchema() (*jsonschema.Schema, error) {
	const name = "erasure-confirmed.v1.json"
	raw, err := docs.Schemas.ReadFile("schemas/" + name)
	if err != nil {
		return nil, fmt.Errorf("reading schema %s: %w", name, err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("parsing schema %s: %w", name, err)
	}
	comp := jsonschema.NewCompiler()
	comp.AssertFormat()
	if err := comp.AddResource(name, doc); err != nil {
		return nil, fmt.Errorf("loading schema %s: %w", name, err)
	}
	return comp.Compile(name)
}

// listen binds a private queue of the check to exchange and collects what
// arrives in into.
func (c *checker) listen(ch *amqp.Channel, exchange, key string, into *[]seen) error {
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		return fmt.Errorf("declaring the check's queue: %w", err)
	}
	if err := ch.QueueBind(q.Name, key, exchange, false, nil); err != nil {
		return fmt.Errorf("binding the check's queue to %s: %w", exchange, err)
	}
	deliveries, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		return fmt.Errorf("consuming the check's queue: %w", err)
	}
	go func() {
		for d := range deliveries {
			s := seen{d: d, at: time.Now()}
			s.valid = c.validate(d.Body)
			_ = json.Unmarshal(d.Body, &s.body)
			c.mu.Lock()
			*into = append(*into, s)
			close(c.changed)
			c.changed = make(chan struct{})
			c.mu.Unlock()
		}
	}()
	return nil
}

func (c *checker) validate(body []byte) error {
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("body is not JSON: %w", err)
	}
	return c.schema.Validate(v)
}

// command is one message the check sends.
type command struct {
	msg message.Message
}

func (c *checker) newCommand(requestID string, attempt int, subject event.Subject, version int) command {
	body := event.ErasureCommand{Version: version, RequestID: requestID, Participant: c.name, Subject: subject, Attempt: attempt}
	m, _ := message.New(event.TypeErasureCommand, body, nil) // a struct of strings and ints always encodes
	m.RoutingKey = event.TypeErasureCommand + "." + c.name
	m.CorrelationID = requestID
	return command{msg: m}
}

func (c *checker) send(ctx context.Context, cmd command) error {
	if err := c.pub.Publish(ctx, cmd.msg); err != nil {
		return fmt.Errorf("sending a command to %s: %w", c.report.Queue, err)
	}
	return nil
}

// answers returns the confirmations and dead letters that concern one of
// the requests or commands (by request id, correlation id or causation id).
func (c *checker) answers(requestID string, commandIDs ...string) (confs, dead []seen) {
	match := func(s seen) bool {
		if s.body.RequestID == requestID || s.d.CorrelationId == requestID {
			return true
		}
		cause, _ := s.d.Headers[bus.HeaderCausationID].(string)
		for _, id := range commandIDs {
			if s.d.MessageId == id || cause == id {
				return true
			}
		}
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.confs {
		if match(s) {
			confs = append(confs, s)
		}
	}
	for _, s := range c.dead {
		if match(s) {
			dead = append(dead, s)
		}
	}
	return confs, dead
}

// wait waits until done holds for the step's answers (or the timeout), then
// settles, and returns the answers.
func (c *checker) wait(ctx context.Context, done func(confs, dead []seen) bool, requestID string, commandIDs ...string) (confs, dead []seen, err error) {
	deadline := time.NewTimer(c.opts.Timeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		changed := c.changed
		c.mu.Unlock()
		if done(c.answers(requestID, commandIDs...)) {
			break
		}
		select {
		case <-changed:
			continue
		case <-deadline.C:
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
		break
	}
	select {
	case <-time.After(c.opts.Settle):
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	confs, dead = c.answers(requestID, commandIDs...)
	return confs, dead, nil
}

func (c *checker) add(step, rule string, must, kept bool, detail string, args ...any) {
	c.report.Results = append(c.report.Results, Result{Step: step, Rule: rule, Must: must, Kept: kept, Detail: fmt.Sprintf(detail, args...)})
}

func (c *checker) skip(step string, rules ...string) {
	for _, r := range rules {
		c.report.Results = append(c.report.Results, Result{Step: step, Rule: r, Must: true, Skipped: true, Detail: "not checked: the participant did not confirm a well-formed command"})
	}
}

// Steps, in the order they run.
const (
	StepCommand            = "command"
	StepDuplicate          = "duplicate"
	StepReplay             = "replay after confirmation"
	StepResend             = "re-send"
	StepMalformedBody      = "malformed body"
	StepMissingSubject     = "command without subject"
	StepUnsupportedVersion = "unsupported version"
)

// Rules the report names.
const (
	RuleConfirmed       = "a well-formed command is confirmed"
	RuleOnePerDelivery  = "each delivery is answered by exactly one confirmation"
	RuleEnvelope        = "the confirmation has a message_id and type erasure.confirmed"
	RuleBody            = "the confirmation body matches erasure-confirmed.v1.json and echoes request_id and participant"
	RuleOutcome         = "a made-up subject is confirmed as erased or not_found"
	RulePersistent      = "the confirmation is persistent (delivery_mode 2)"
	RuleCorrelation     = "correlation_id is the request id"
	RuleCausation       = "causation_id is the command's message_id"
	RuleContentType     = "content_type is application/json"
	RuleAttempt         = "attempt echoes the command's attempt"
	RuleTrace           = "traceparent continues the command's trace with a new span id"
	RuleTimestamp       = "timestamp is in seconds since the epoch"
	RuleOccurredAt      = "occurred_at is an RFC 3339 time"
	RuleConfirmationID  = "message_id is the documented UUIDv5 of the command's message_id"
	RuleEveryCopy       = "every delivery of a duplicated command is confirmed"
	RuleSameID          = "confirmations of one command share one message_id"
	RuleReplayed        = "a command replayed after its confirmation is confirmed again, erased or not_found"
	RuleReplaySameID    = "the replay's confirmation has the first confirmation's message_id"
	RuleResent          = "a re-sent command (new message_id, attempt 2) is confirmed"
	RuleResentNewID     = "a re-sent command's confirmation has a new message_id"
	RuleNotConfirmed    = "it is not confirmed"
	RuleDeadLettered    = "it is dead-lettered to <prefix>.dlx"
	RuleDeadLetterCause = "the dead letter carries its reason in x-gdpr-dead-letter-reason"
)

func (c *checker) run(ctx context.Context) error {
	subject := madeUp()
	reqA := uuid.NewString()
	first := c.newCommand(reqA, 1, subject, participant.ProtocolVersion)
	if err := c.send(ctx, first); err != nil {
		return err
	}
	confs, _, err := c.wait(ctx, func(confs, _ []seen) bool { return len(confs) > 0 }, reqA, first.msg.ID)
	if err != nil {
		return err
	}
	if len(confs) == 0 {
		c.add(StepCommand, RuleConfirmed, true, false, "no confirmation within %s: is the participant running, on the exchange %s? Its queue is %s",
			c.opts.Timeout, c.conn.Exchange(), c.report.Queue)
		c.skip(StepDuplicate, RuleEveryCopy)
		c.skip(StepReplay, RuleReplayed)
		c.skip(StepResend, RuleResent)
		return nil
	}
	c.add(StepCommand, RuleConfirmed, true, true, "%s after %s", confs[0].body.Outcome, confs[0].at.Sub(first.msg.OccurredAt).Round(time.Millisecond))
	c.onePerDelivery(StepCommand, confs, 1)
	c.checkConfirmation(StepCommand, first, confs[0])
	firstID := confs[0].d.MessageId

	// A duplicate: the same command delivered twice, as after a lost ack.
	reqD := uuid.NewString()
	dup := c.newCommand(reqD, 1, madeUp(), participant.ProtocolVersion)
	for range 2 {
		if err := c.send(ctx, dup); err != nil {
			return err
		}
	}
	confs, _, err = c.wait(ctx, func(confs, _ []seen) bool { return len(confs) >= 2 }, reqD, dup.msg.ID)
	if err != nil {
		return err
	}
	c.add(StepDuplicate, RuleEveryCopy, true, len(confs) >= 2 && allSucceeded(confs), "%s for 2 deliveries", describe(confs))
	c.onePerDelivery(StepDuplicate, confs, 2)
	ids := map[string]bool{}
	for _, s := range confs {
		ids[s.d.MessageId] = true
	}
	c.add(StepDuplicate, RuleSameID, false, len(ids) <= 1, "%d distinct message_ids", len(ids))

	// The first command again, after it was confirmed.
	before, _ := c.answers(reqA, first.msg.ID)
	if err := c.send(ctx, first); err != nil {
		return err
	}
	confs, _, err = c.wait(ctx, func(confs, _ []seen) bool { return len(confs) > len(before) }, reqA, first.msg.ID)
	if err != nil {
		return err
	}
	replayed := confs[len(before):]
	c.add(StepReplay, RuleReplayed, true, len(replayed) >= 1 && allSucceeded(replayed), "%s", describe(replayed))
	c.onePerDelivery(StepReplay, replayed, 1)
	if len(replayed) > 0 {
		c.add(StepReplay, RuleReplaySameID, false, replayed[0].d.MessageId == firstID, "first %s, replay %s", firstID, replayed[0].d.MessageId)
	}

	// A re-send: a new command for the same request, as the canceller sends
	// after confirm_timeout.
	before, _ = c.answers(reqA, first.msg.ID)
	resend := c.newCommand(reqA, 2, subject, participant.ProtocolVersion)
	if err := c.send(ctx, resend); err != nil {
		return err
	}
	confs, _, err = c.wait(ctx, func(confs, _ []seen) bool { return len(confs) > len(before) }, reqA, first.msg.ID, resend.msg.ID)
	if err != nil {
		return err
	}
	resent := confs[len(before):]
	c.add(StepResend, RuleResent, true, len(resent) >= 1 && allSucceeded(resent), "%s", describe(resent))
	c.onePerDelivery(StepResend, resent, 1)
	if len(resent) > 0 {
		c.add(StepResend, RuleResentNewID, true, resent[0].d.MessageId != firstID,
			"the canceller drops a confirmation whose message_id it applied before; got %s, the first was %s", resent[0].d.MessageId, firstID)
		c.add(StepResend, RuleAttempt, false, resent[0].body.Attempt == 2, "attempt %d", resent[0].body.Attempt)
	}

	// Commands the participant must not act on.
	bad := c.newCommand(uuid.NewString(), 1, madeUp(), participant.ProtocolVersion)
	bad.msg.Body = []byte(`{"version": 1, "request_id": `)
	if err := c.refused(ctx, StepMalformedBody, bad); err != nil {
		return err
	}
	noSubject := c.newCommand(uuid.NewString(), 1, event.Subject{}, participant.ProtocolVersion)
	if err := c.refused(ctx, StepMissingSubject, noSubject); err != nil {
		return err
	}
	v2 := c.newCommand(uuid.NewString(), 1, madeUp(), participant.ProtocolVersion+1)
	return c.refused(ctx, StepUnsupportedVersion, v2)
}

// refused sends cmd, which the participant must dead-letter, not confirm.
func (c *checker) refused(ctx context.Context, step string, cmd command) error {
	if err := c.send(ctx, cmd); err != nil {
		return err
	}
	confs, dead, err := c.wait(ctx, func(confs, dead []seen) bool { return len(confs)+len(dead) > 0 }, cmd.msg.CorrelationID, cmd.msg.ID)
	if err != nil {
		return err
	}
	c.add(step, RuleNotConfirmed, true, len(confs) == 0, "%s", describe(confs))
	if len(dead) == 0 {
		c.add(step, RuleDeadLettered, true, false, "nothing reached %s within %s", c.conn.DeadLetterExchange(), c.opts.Timeout)
		return nil
	}
	c.add(step, RuleDeadLettered, true, true, "dead-lettered")
	reason, _ := dead[0].d.Headers[bus.HeaderDeadLetterReason].(string)
	detail := "reason: " + reason
	if reason == "" {
		detail = "no reason: a reject or nack lets the broker dead-letter it without one (see Dead-lettering a command)"
	}
	kept := reason != ""
	if step == StepUnsupportedVersion && kept && !strings.Contains(reason, "version") {
		kept, detail = false, "the reason does not name the version: "+reason
	}
	c.add(step, RuleDeadLetterCause, false, kept, "%s", detail)
	return nil
}

func (c *checker) onePerDelivery(step string, confs []seen, deliveries int) {
	if len(confs) > deliveries {
		c.add(step, RuleOnePerDelivery, true, false, "%d confirmations for %d deliveries", len(confs), deliveries)
		return
	}
	c.add(step, RuleOnePerDelivery, true, true, "%d for %d", len(confs), deliveries)
}

// checkConfirmation checks the envelope and body of the confirmation s of cmd.
func (c *checker) checkConfirmation(step string, cmd command, s seen) {
	d := s.d
	c.add(step, RuleEnvelope, true, d.MessageId != "" && d.Type == event.TypeErasureConfirmed && d.RoutingKey == event.TypeErasureConfirmed,
		"message_id %q, type %q, routing key %q", d.MessageId, d.Type, d.RoutingKey)
	var bodyErr error
	switch {
	case s.valid != nil:
		bodyErr = s.valid
	case s.body.RequestID != cmd.msg.CorrelationID:
		bodyErr = fmt.Errorf("request_id %q, the command's is %q", s.body.RequestID, cmd.msg.CorrelationID)
	case s.body.Participant != c.name:
		bodyErr = fmt.Errorf("participant %q, expected %q", s.body.Participant, c.name)
	}
	c.add(step, RuleBody, true, bodyErr == nil, "%s", errText(bodyErr))
	c.add(step, RuleOutcome, true, succeeded(s), "outcome %q, detail %q", s.body.Outcome, s.body.Detail)
	c.add(step, RulePersistent, true, d.DeliveryMode == amqp.Persistent, "delivery_mode %d", d.DeliveryMode)
	c.add(step, RuleCorrelation, false, d.CorrelationId == cmd.msg.CorrelationID, "correlation_id %q", d.CorrelationId)
	cause, _ := d.Headers[bus.HeaderCausationID].(string)
	c.add(step, RuleCausation, false, cause == cmd.msg.ID, "causation_id %q, the command's message_id %q", cause, cmd.msg.ID)
	c.add(step, RuleContentType, false, d.ContentType == "application/json", "content_type %q", d.ContentType)
	c.add(step, RuleAttempt, false, s.body.Attempt == 1, "attempt %d", s.body.Attempt)
	c.checkTrace(step, cmd, d)
	switch {
	case d.Timestamp.IsZero():
		c.add(step, RuleTimestamp, false, true, "not set")
	default:
		off := time.Since(d.Timestamp)
		ok := off < 24*time.Hour && off > -24*time.Hour
		hint := ""
		if !ok {
			hint = " (milliseconds instead of seconds?)"
		}
		c.add(step, RuleTimestamp, false, ok, "timestamp %d, %s from now%s", d.Timestamp.Unix(), off.Round(time.Second), hint)
	}
	if v, ok := d.Headers[bus.HeaderOccurredAt]; ok {
		str, _ := v.(string)
		_, err := time.Parse(time.RFC3339Nano, str)
		c.add(step, RuleOccurredAt, false, err == nil, "occurred_at %q", str)
	}
	want := participant.ConfirmationID(c.name, cmd.msg.ID)
	c.add(step, RuleConfirmationID, false, d.MessageId == want, "message_id %s, expected %s", d.MessageId, want)
}

func (c *checker) checkTrace(step string, cmd command, d amqp.Delivery) {
	got, _ := d.Headers[bus.HeaderTraceparent].(string)
	wantTrace, _ := trace.TraceID(cmd.msg.Traceparent)
	gotTrace, ok := trace.TraceID(got)
	switch {
	case !ok:
		c.add(step, RuleTrace, false, false, "traceparent %q is not a W3C traceparent", got)
	case gotTrace != wantTrace:
		c.add(step, RuleTrace, false, false, "trace id %s, the command's is %s", gotTrace, wantTrace)
	case got == cmd.msg.Traceparent:
		c.add(step, RuleTrace, false, false, "the command's traceparent copied unchanged; the span id must be new")
	default:
		c.add(step, RuleTrace, false, true, "trace %s", gotTrace)
	}
}

func succeeded(s seen) bool {
	return s.body.Outcome == event.OutcomeErased || s.body.Outcome == event.OutcomeNotFound
}

func allSucceeded(confs []seen) bool {
	for _, s := range confs {
		if !succeeded(s) {
			return false
		}
	}
	return len(confs) > 0
}

func describe(confs []seen) string {
	if len(confs) == 0 {
		return "no confirmation"
	}
	outcomes := make([]string, len(confs))
	for i, s := range confs {
		outcomes[i] = fmt.Sprintf("%q", s.body.Outcome)
	}
	return fmt.Sprintf("%d confirmation(s): %s", len(confs), strings.Join(outcomes, ", "))
}

func errText(err error) string {
	if err == nil {
		return "ok"
	}
	var ve *jsonschema.ValidationError
	if errors.As(err, &ve) {
		return strings.ReplaceAll(ve.Error(), "\n", "; ")
	}
	return err.Error()
}
