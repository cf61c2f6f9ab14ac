package bus

import (
	"context"
	"errors"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"
)

// ExchangeExists reports whether the broker has an exchange called name. It
// declares passively on a throwaway channel, because a passive declare of a
// missing exchange closes the channel it runs on.
func (c *Conn) ExchangeExists(ctx context.Context, name string) (bool, error) {
	if name == "" || name == c.Exchange() {
		return true, nil
	}
	ch, err := c.Channel(ctx)
	if err != nil {
		return false, err
	}
	defer ch.Close()
	err = ch.ExchangeDeclarePassive(name, "topic", true, false, false, false, nil)
	var amqpErr *amqp.Error
	switch {
	case err == nil:
		return true, nil
	case errors.As(err, &amqpErr) && amqpErr.Code == amqp.NotFound:
		return false, nil
	default:
		return false, fmt.Errorf("checking exchange %s: %w", name, err)
	}
}
