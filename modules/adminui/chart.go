package adminui

import (
	"strconv"

	"github.com/gdpr-oss/gdpr/modules/requests"
)

// chart is the dashboard's inline SVG of requests submitted and completed
// per day: two bars a day, scaled to the busiest day.
type chart struct {
	Width, Height int
	Bars          []bar
	Labels        []label
	Max           int
	Days          []requests.Day
	Summary       string
}

type bar struct {
	X, Y, W, H int
	Class      string
	Title      string
}

type label struct {
	X, Y int
	Text string
}

const (
	chartH   = 160
	chartTop = 10
	slotW    = 44
)

func newChart(days []requests.Day) chart {
	c := chart{Width: len(days)*slotW + 40, Height: chartH + 40, Days: days, Max: 1}
	subTotal, doneTotal := 0, 0
	for _, d := range days {
		c.Max = max(c.Max, d.Submitted, d.Completed)
		subTotal += d.Submitted
		doneTotal += d.Completed
	}
	h := func(n int) int { return n * chartH / c.Max }
	for i, d := range days {
		x := 30 + i*slotW
		day := d.Day.UTC().Format("Jan 2")
		sh, ch := h(d.Submitted), h(d.Completed)
		c.Bars = append(c.Bars,
			bar{X: x, Y: chartTop + chartH - sh, W: 16, H: sh, Class: "sub", Title: day + ": " + strconv.Itoa(d.Submitted) + " submitted"},
			bar{X: x + 18, Y: chartTop + chartH - ch, W: 16, H: ch, Class: "done", Title: day + ": " + strconv.Itoa(d.Completed) + " completed"})
		if i%2 == 0 || len(days) <= 7 {
			c.Labels = append(c.Labels, label{X: x, Y: chartTop + chartH + 16, Text: d.Day.UTC().Format("02 Jan")})
		}
	}
	c.Summary = strconv.Itoa(subTotal) + " submitted and " + strconv.Itoa(doneTotal) + " completed over the last " + strconv.Itoa(len(days)) + " days"
	return c
}
