package app

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/config"
	"github.com/gdpr-oss/gdpr/config/configtest"
	"github.com/gdpr-oss/gdpr/modules/erasure"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// documentedQueueArgs reads the participant queue's arguments from
// docs/protocol.md, the object a participant in any language copies.
func documentedQueueArgs(t *testing.T, prefix string) amqp.Table {
	t.Helper()
	b, err := os.ReadFile("../docs/protocol.md")
	require.NoError(t, err)
	_, rest, ok := strings.Cut(string(b), "<!-- participant queue arguments")
	require.True(t, ok, "docs/protocol.md lacks the participant queue arguments")
	_, rest, ok = strings.Cut(rest, "```json\n")
	require.True(t, ok)
	object, _, ok := strings.Cut(rest, "```")
	require.True(t, ok)
	var args map[string]any
	require.NoError(t, json.Unmarshal([]byte(strings.ReplaceAll(object, "<prefix>", prefix)), &args))
	require.NotEmpty(t, args)
	return amqp.Table(args)
}

// rawChannel is a channel of a plain amqp091 client, standing in for a
// participant written without the Go SDK.
func rawChannel(t *testing.T, url string) *amqp.Channel {
	t.Helper()
	conn, err := amqp.Dial(url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	require.NoError(t, err)
	return ch
}

// readyz returns the status and body of a role's /readyz.
func readyz(admin string) (int, string) {
	client := http.Client{Timeout: 3 * time.Second}
	resp, err := client.Get("http://" + admin + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func participantConfig(t *testing.T) (config.Config, []string, map[string]string) {
	t.Helper()
	cfg := configtest.Config(t)
	cfg.Canceller.Participants = []erasure.Participant{{Name: "billing", Kind: "amqp"}}
	env, admin := roleEnv(t, cfg)
	env = append(env, "GDPR_CANCELLER_PARTICIPANTS=[{name: billing, kind: amqp}]")
	return cfg, env, admin
}

// TestParticipantQueueDeclaredAsDocumented: a participant that is not the Go
// SDK declares its queue with exactly the arguments docs/protocol.md lists,
// before gdpr starts or after; both sides' declarations are accepted and
// gdpr becomes ready.
func TestParticipantQueueDeclaredAsDocumented(t *testing.T) {
	t.Parallel()
	bin := testkit.Build(t)

	declare := func(t *testing.T, cfg config.Config) {
		t.Helper()
		ch := rawChannel(t, cfg.AMQP.URL)
		queue := cfg.AMQP.Prefix + ".participant.billing"
		_, err := ch.QueueDeclare(queue, true, false, false, false, documentedQueueArgs(t, cfg.AMQP.Prefix))
		require.NoError(t, err, "the documented declaration is refused")
		require.NoError(t, ch.ExchangeDeclare(cfg.AMQP.Prefix, "topic", true, false, false, false, nil))
		require.NoError(t, ch.QueueBind(queue, "erasure.command.billing", cfg.AMQP.Prefix, false, nil))
	}

	t.Run("participant first", func(t *testing.T) {
		t.Parallel()
		cfg, env, admin := participantConfig(t)
		declare(t, cfg)
		p := start(t, bin, env, "canceller")
		p.waitReady(t, admin["canceller"])
	})
	t.Run("gdpr first", func(t *testing.T) {
		t.Parallel()
		cfg, env, admin := participantConfig(t)
		p := start(t, bin, env, "canceller")
		p.waitReady(t, admin["canceller"])
		declare(t, cfg)
		code, body := readyz(admin["canceller"])
		require.Equal(t, http.StatusOK, code, body)
	})
}

// TestRefusedParticipantQueueFailsReadiness: a participant queue declared
// with other arguments (here without dead-lettering) keeps gdpr from
// declaring it; the role says which queue, which argument and what to do, in
// its log and its /readyz, and becomes ready once the queue is deleted.
func TestRefusedParticipantQueueFailsReadiness(t *testing.T) {
	t.Parallel()
	bin := testkit.Build(t)
	cfg, env, admin := participantConfig(t)
	queue := cfg.AMQP.Prefix + ".participant.billing"
	ch := rawChannel(t, cfg.AMQP.URL)
	_, err := ch.QueueDeclare(queue, true, false, false, false, amqp.Table{"x-queue-type": "quorum"})
	require.NoError(t, err)

	p := start(t, bin, env, "canceller")
	var body string
	testkit.Eventually(t, 90*time.Second, func() bool {
		var code int
		code, body = readyz(admin["canceller"])
		return code == http.StatusServiceUnavailable && strings.Contains(body, queue)
	}, "/readyz names the refused queue: %s", body)
	require.Contains(t, body, "x-dead-letter-exchange")
	require.Contains(t, body, "rabbitmqctl delete_queue "+queue)
	require.Contains(t, body, "docs/protocol.md")
	log := p.out.String()
	require.Contains(t, log, `"msg":"amqp queue declaration refused"`)
	require.Contains(t, log, `"queue":"`+queue+`"`)
	require.Contains(t, log, `"argument":"x-dead-letter-exchange"`)

	_, err = ch.QueueDelete(queue, false, false, false)
	require.NoError(t, err)
	p.waitReady(t, admin["canceller"])
	require.Contains(t, p.out.String(), `"msg":"amqp topology declared after a refusal"`)
}
