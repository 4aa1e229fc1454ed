// Renders consul-template templates with Go's text/template, the way Vault
// Agent does, for tests/convert.rs to compare the converted handlebars
// templates against byte for byte.
//
// Input (stdin): a JSON array of cases, each
//   {"template": "...", "strict": false,
//    "secrets": [{"path": "...", "args": ["k=v"], "response": {...}}],
//    "json": <value or absent>}
// Output (stdout): a JSON array of {"output": "...", "error": "..."}.
//
// `secret` is emulated from the given responses, as consul-template's
// dependency.Secret (Data decoded with UseNumber, as Vault's API client
// does). base64Decode, base64Encode, toJSON and toJSONPretty are
// consul-template's own definitions. With "json", the case instead prints
// toJSON and toJSONPretty of that value, separated by a NUL byte.
// Only the standard library is used.
package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/template"
)

type secretCase struct {
	Path     string          `json:"path"`
	Args     []string        `json:"args"`
	Response json.RawMessage `json:"response"`
}

type testCase struct {
	Template string          `json:"template"`
	Strict   bool            `json:"strict"`
	Secrets  []secretCase    `json:"secrets"`
	JSON     json.RawMessage `json:"json"`
}

type result struct {
	Output string `json:"output"`
	Error  string `json:"error,omitempty"`
}

// Secret mirrors consul-template's dependency.Secret fields templates use.
type Secret struct {
	RequestID     string
	LeaseID       string
	LeaseDuration int
	Renewable     bool
	Data          map[string]interface{}
	Warnings      []string
}

func decode(raw []byte, into interface{}) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	return dec.Decode(into)
}

func toJSON(i interface{}) (string, error) {
	result, err := json.Marshal(i)
	if err != nil {
		return "", err
	}
	return string(bytes.TrimSpace(result)), err
}

func toJSONPretty(i interface{}) (string, error) {
	result, err := json.MarshalIndent(i, "", "  ")
	if err != nil {
		return "", err
	}
	return string(bytes.TrimSpace(result)), err
}

func run(c testCase) result {
	if len(c.JSON) > 0 {
		var v interface{}
		if err := decode(c.JSON, &v); err != nil {
			return result{Error: err.Error()}
		}
		a, err := toJSON(v)
		if err != nil {
			return result{Error: err.Error()}
		}
		b, err := toJSONPretty(v)
		if err != nil {
			return result{Error: err.Error()}
		}
		return result{Output: a + "\x00" + b}
	}
	secrets := map[string]*Secret{}
	for _, s := range c.Secrets {
		var r struct {
			LeaseID       string                 `json:"lease_id"`
			LeaseDuration int                    `json:"lease_duration"`
			Renewable     bool                   `json:"renewable"`
			Data          map[string]interface{} `json:"data"`
			Warnings      []string               `json:"warnings"`
		}
		if err := decode(s.Response, &r); err != nil {
			return result{Error: err.Error()}
		}
		key := strings.Join(append([]string{s.Path}, s.Args...), "|")
		secrets[key] = &Secret{LeaseID: r.LeaseID, LeaseDuration: r.LeaseDuration, Renewable: r.Renewable, Data: r.Data, Warnings: r.Warnings}
	}
	funcs := template.FuncMap{
		"secret": func(s ...string) (*Secret, error) {
			if v, ok := secrets[strings.Join(s, "|")]; ok {
				return v, nil
			}
			return nil, fmt.Errorf("no secret %q", s)
		},
		"base64Decode": func(s string) (string, error) {
			v, err := base64.StdEncoding.DecodeString(s)
			if err != nil {
				return "", err
			}
			return string(v), nil
		},
		"base64Encode": func(s string) (string, error) {
			return base64.StdEncoding.EncodeToString([]byte(s)), nil
		},
		"toJSON":       toJSON,
		"toJSONPretty": toJSONPretty,
	}
	t := template.New("t").Funcs(funcs)
	if c.Strict {
		t = t.Option("missingkey=error")
	} else {
		t = t.Option("missingkey=zero")
	}
	t, err := t.Parse(c.Template)
	if err != nil {
		return result{Error: err.Error()}
	}
	var out bytes.Buffer
	if err := t.Execute(&out, nil); err != nil {
		return result{Output: out.String(), Error: err.Error()}
	}
	return result{Output: out.String()}
}

func main() {
	var cases []testCase
	if err := json.NewDecoder(os.Stdin).Decode(&cases); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	results := make([]result, 0, len(cases))
	for _, c := range cases {
		results = append(results, run(c))
	}
	if err := json.NewEncoder(os.Stdout).Encode(results); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
