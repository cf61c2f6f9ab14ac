package api_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/api"
	"github.com/gdpr-oss/gdpr/modules/console"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// routesOnly and intakeRoutesOnly stand in for the officer and intake so
// that the server registers every route; the test below only lists the
// routes and never calls them.
type (
	routesOnly       struct{ api.Officer }
	intakeRoutesOnly struct{ api.Intake }
)

// TestEveryRouteIsInTheOpenAPIDocument: each /v1 route the server
// registers, the admin API's included, is an operation of openapi.json
// (and the document lists none the server does not serve).
func TestEveryRouteIsInTheOpenAPIDocument(t *testing.T) {
	t.Parallel()
	ops, err := console.NewOperators(nil, nil)
	require.NoError(t, err)
	srv, err := api.New(api.Options{
		Addr: "127.0.0.1:0", Intake: intakeRoutesOnly{}, Officer: routesOnly{}, Operators: ops, MaxBodyBytes: 1 << 10,
		Registerer: prometheus.NewRegistry(), Logger: testkit.Logger(t),
	})
	require.NoError(t, err)
	e, ok := srv.Handler().(*echo.Echo)
	require.True(t, ok)
	var served []string
	for _, r := range e.Routes() {
		if !strings.HasPrefix(r.Path, "/v1/") || r.Method == echo.RouteNotFound {
			continue
		}
		parts := strings.Split(r.Path, "/")
		for i, p := range parts {
			if name, ok := strings.CutPrefix(p, ":"); ok {
				parts[i] = "{" + name + "}"
			}
		}
		served = append(served, r.Method+" "+strings.Join(parts, "/"))
	}
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	require.NoError(t, json.Unmarshal(api.OpenAPI, &doc))
	var documented []string
	for path, methods := range doc.Paths {
		for m := range methods {
			if m == "parameters" {
				continue
			}
			documented = append(documented, strings.ToUpper(m)+" "+path)
		}
	}
	slices.Sort(served)
	served = slices.Compact(served)
	slices.Sort(documented)
	require.Contains(t, served, http.MethodPost+" /v1/admin/requests/{id}/extend", "the admin routes are registered")
	require.Equal(t, served, documented)
}
