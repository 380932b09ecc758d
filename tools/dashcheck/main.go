// dashcheck decodes Grafana dashboard JSON files strictly with Grafana's own schema types
// (github.com/grafana/grafana-foundation-sdk/go, every panel and query plugin registered), runs the
// schema's constraints, and prints one line per problem: file, JSON path, message, class.
//
// One class is accepted: "required field is missing from input" where Grafana itself fills the value
// when it loads the dashboard, i.e. under a panel's "options" (the panel plugin's defaults) and under a
// template variable's "current" (resolved on load; Grafana's own export writes "current": {} for a
// datasource variable). Everything else fails: unknown fields, wrong types, null or missing required
// fields elsewhere, failed constraints, panel types and query types the schema does not know.
//
// Usage: dashcheck [-strict] FILE.json...   (-strict accepts nothing). Exit 0 clean, 1 problems, 2 usage.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// The SDK's message for an absent required field, exactly (cog-generated UnmarshalJSONStrict).
const missingRequired = "required field is missing from input"

// Accepted is the only class that does not fail the check.
const Accepted = "missing-required-with-default"

// Where Grafana fills an absent required value on load: anywhere under a panel's options (rows'
// nested panels included), and a template variable's current text/value.
var defaultedPath = regexp.MustCompile(
	`^(panels\[\d+\]\.)+options(\.[A-Za-z_][A-Za-z0-9_]*(\[\d+\])*)+$` +
		`|^templating\.list\[\d+\]\.current\.(text|value)$`)

// The SDK names an unexpected field at the path of the Go type holding it ("panels[3].Panel",
// "Dashboard"); the JSON path is that path without the type name, plus the field.
var unexpectedField = regexp.MustCompile(`^unexpected field '(.*)'$`)
var typeSegment = regexp.MustCompile(`(^|\.)[A-Z][A-Za-z0-9]*$`)

type problem struct {
	File, Path, Message, Class string
}

func (p problem) accepted() bool { return p.Class == Accepted }

func (p problem) String() string {
	path := "$"
	if p.Path != "" {
		path += "." + p.Path
	}
	verdict := "error: " + p.Class
	if p.accepted() {
		verdict = "accepted: " + p.Class
	}
	return fmt.Sprintf("%s: %s: %s [%s]", p.File, path, p.Message, verdict)
}

// classify names a decode (fromValidate=false) or constraint (fromValidate=true) problem.
func classify(path, msg string, fromValidate, strict bool) (string, string) {
	if m := unexpectedField.FindStringSubmatch(msg); m != nil {
		base := typeSegment.ReplaceAllString(path, "")
		if base != "" {
			base += "."
		}
		return base + m[1], "unknown-field"
	}
	switch {
	case fromValidate:
		return path, "failed-constraint"
	case msg == missingRequired && !strict && defaultedPath.MatchString(path):
		return path, Accepted
	case msg == missingRequired:
		return path, "missing-required"
	case msg == "required field is null":
		return path, "null-required"
	case strings.HasPrefix(msg, "json: cannot unmarshal"):
		return path, "wrong-type"
	}
	return path, "invalid"
}

// flatten turns what the SDK returns into (path, message) pairs. Its strict decoders return a
// cog.BuildErrors even when it is empty (a typed nil), so "err != nil" alone means nothing.
func flatten(prefix string, err error) [][2]string {
	if err == nil {
		return nil
	}
	var out [][2]string
	for _, be := range cog.MakeBuildErrors(prefix, err) {
		path := strings.TrimPrefix(be.Path, ".")
		out = append(out, [2]string{path, be.Message})
	}
	return out
}

func join(prefix, path string) string {
	switch {
	case prefix == "":
		return path
	case path == "":
		return prefix
	}
	return prefix + "." + path
}

type checker struct {
	strict   bool
	panels   int
	problems []problem
	seen     map[string]bool
}

func (c *checker) add(file, path, msg string, fromValidate bool) {
	path, class := classify(path, msg, fromValidate, c.strict)
	c.record(file, path, msg, class)
}

func (c *checker) record(file, path, msg, class string) {
	key := file + "\x00" + path + "\x00" + msg
	if c.seen[key] {
		return
	}
	c.seen[key] = true
	c.problems = append(c.problems, problem{file, path, msg, class})
}

func (c *checker) addAll(file, prefix string, err error, fromValidate bool) {
	for _, pm := range flatten("", err) {
		c.add(file, join(prefix, pm[0]), pm[1], fromValidate)
	}
}

// checkPanel validates one decoded panel (the dashboard-level decode has already reported its decode
// problems) and refuses what the schema would otherwise let through unchecked.
func (c *checker) checkPanel(file, prefix string, raw json.RawMessage, p *dashboard.Panel) {
	c.panels++
	// v0.0.22's Panel.UnmarshalJSONStrict decodes "fieldConfig" with plain json.Unmarshal (only its
	// defaults.custom goes through the plugin's strict types): wrong types surface, unknown fields do
	// not. Decode it strictly here; its wrong types were already reported by the panel decode.
	var fields struct {
		FieldConfig json.RawMessage `json:"fieldConfig"`
	}
	if json.Unmarshal(raw, &fields) == nil && fields.FieldConfig != nil && string(fields.FieldConfig) != "null" {
		var fc dashboard.FieldConfigSource
		for _, pm := range flatten("", fc.UnmarshalJSONStrict(fields.FieldConfig)) {
			path, class := classify(join(prefix+".fieldConfig", pm[0]), pm[1], false, c.strict)
			if class != "wrong-type" {
				c.record(file, path, pm[1], class)
			}
		}
	}
	if _, ok := cog.ConfigForPanelcfgVariant(p.Type); !ok && p.Type != "" {
		c.record(file, join(prefix, "type"),
			fmt.Sprintf("unknown panel type '%s': no schema for its options and fieldConfig", p.Type), "unknown-panel-type")
	}
	for i, t := range p.Targets {
		if u, unknown := t.(variants.UnknownDataquery); unknown {
			dsType := "none"
			if p.Datasource != nil && p.Datasource.Type != nil {
				dsType = *p.Datasource.Type
			}
			if ds, ok := u["datasource"].(map[string]any); ok && ds["type"] != nil {
				dsType = fmt.Sprint(ds["type"])
			}
			c.record(file, join(prefix, "targets["+strconv.Itoa(i)+"]"),
				fmt.Sprintf("unknown query type (datasource type '%s'): no schema for this target", dsType),
				"unknown-query-type")
		}
	}
	c.addAll(file, prefix, p.Validate(), true)
}

func (c *checker) checkFile(file string) {
	raw, err := os.ReadFile(file)
	if err != nil {
		c.add(file, "", err.Error(), false)
		return
	}
	// 1. The whole dashboard, strictly: unknown fields, wrong types, required fields, every panel's
	//    options and fieldConfig through its plugin's types, every target through its query type.
	var d dashboard.Dashboard
	c.addAll(file, "", d.UnmarshalJSONStrict(raw), false)
	// 2. Its constraints. v0.0.22's PanelOrRowPanel.UnmarshalJSONStrict drops the decoded panel (it
	//    returns the typed-nil error above and the caller keeps nothing), so Dashboard.Validate never
	//    sees a panel: each panel is decoded again on its own below and validated there.
	c.addAll(file, "", d.Validate(), true)

	var top struct {
		Panels []json.RawMessage `json:"panels"`
	}
	if json.Unmarshal(raw, &top) != nil {
		return // already reported by the strict decode
	}
	for i, rp := range top.Panels {
		prefix := "panels[" + strconv.Itoa(i) + "]"
		var head struct {
			Type any `json:"type"`
		}
		if json.Unmarshal(rp, &head) != nil {
			continue
		}
		if head.Type == "row" {
			c.panels++
			var row dashboard.RowPanel
			_ = row.UnmarshalJSONStrict(rp) // decode problems reported in step 1
			var nested struct {
				Panels []json.RawMessage `json:"panels"`
			}
			_ = json.Unmarshal(rp, &nested)
			for j := range row.Panels {
				inner := prefix + ".panels[" + strconv.Itoa(j) + "]"
				var rawInner json.RawMessage
				if j < len(nested.Panels) {
					rawInner = nested.Panels[j]
				}
				c.checkPanel(file, inner, rawInner, &row.Panels[j])
			}
			row.Panels = nil // validated above, with the right paths
			c.addAll(file, prefix, row.Validate(), true)
			continue
		}
		var p dashboard.Panel
		_ = p.UnmarshalJSONStrict(rp) // decode problems reported in step 1
		c.checkPanel(file, prefix, rp, &p)
	}
}

func main() {
	strict := flag.Bool("strict", false, "accept nothing, not even required options Grafana fills with defaults")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: %s [-strict] DASHBOARD.json...\n", os.Args[0])
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	plugins.RegisterDefaultPlugins()
	os.Exit(run(os.Stdout, flag.Args(), *strict))
}

func run(w io.Writer, files []string, strict bool) int {
	c := &checker{strict: strict, seen: map[string]bool{}}
	for _, f := range files {
		c.checkFile(f)
	}
	counts := map[string]int{}
	for _, p := range c.problems {
		fmt.Fprintln(w, p)
		counts[p.Class]++
	}
	accepted := counts[Accepted]
	delete(counts, Accepted)
	errorsTotal := 0
	var kinds []string
	for k, n := range counts {
		errorsTotal += n
		kinds = append(kinds, fmt.Sprintf("%s %d", k, n))
	}
	sort.Strings(kinds)
	detail := ""
	if len(kinds) > 0 {
		detail = " (" + strings.Join(kinds, ", ") + ")"
	}
	fmt.Fprintf(w, "dashcheck: %d files, %d panels, %d %s (accepted), %d errors%s\n",
		len(files), c.panels, accepted, Accepted, errorsTotal, detail)
	if errorsTotal > 0 {
		return 1
	}
	return 0
}
