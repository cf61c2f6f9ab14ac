// Command participant-go is a complete erasure participant in Go: it deletes
// a subject's orders from its own PostgreSQL database when the canceller
// asks, and confirms. Run it with
//
//	AMQP_URL=amqp://guest:guest@127.0.0.1:5672/ AMQP_PREFIX=gdpr \
//	DATABASE_URL=postgres://root@127.0.0.1:5432/shop?sslmode=disable \
//	go run ./docs/examples/participant-go
//
// and register it in the canceller's configuration as
// {name: shop, kind: amqp}.
package main

import (
	"context"
	"database/sql"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/participant"
)

func main() {
	logger := slog.New(slog.NewJSONHandler(os.Stdout, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, logger); err != nil {
		logger.Error("participant stopped", "error", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, logger *slog.Logger) error {
	db, err := sql.Open("pgx", os.Getenv("DATABASE_URL"))
	if err != nil {
		return err
	}
	defer db.Close()

	amqpCfg := participant.DefaultConfig()
	if v := os.Getenv("AMQP_URL"); v != "" {
		amqpCfg.URL = v
	}
	if v := os.Getenv("AMQP_PREFIX"); v != "" {
		amqpCfg.Prefix = v
	}
	conn, err := participant.Dial(ctx, amqpCfg, "shop-participant", logger)
	if err != nil {
		return err
	}
	defer conn.Close()

	erase := func(ctx context.Context, s event.Subject) (string, error) {
		// Erase by every identifier the service knows the subject under.
		res, err := db.ExecContext(ctx, `DELETE FROM orders WHERE customer_id = $1 OR customer_email = $2`, s.ID, s.Email)
		if err != nil {
			return "", participant.Failed("orders database error")
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return event.OutcomeNotFound, nil
		}
		return event.OutcomeErased, nil
	}
	return participant.Run(ctx, conn, "shop", erase, participant.Options{DB: db, Logger: logger})
}
