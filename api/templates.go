package api

import (
	"encoding/json"
	"errors"
	"html"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/sesame-mail/sesame/store"
)

// Email templates: SES v2's CreateEmailTemplate, GetEmailTemplate,
// ListEmailTemplates, UpdateEmailTemplate, DeleteEmailTemplate and
// TestRenderEmailTemplate, and SendEmail with Template content. A template
// belongs to the credential that made it (the credential is the SES
// account). Rendering is SES's {{variable}} substitution: {{name}} or
// {{a.b}} takes a value of the JSON TemplateData, HTML-escaped in the HTML
// part; {{{name}}} is not escaped. Handlebars' block helpers ({{#if}},
// {{#each}}) are not supported and refused when a template is stored.

// templateNameRE is SES's rule for template names.
var templateNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// templateContent is SES v2's EmailTemplateContent.
type templateContent struct {
	Subject, Text, Html *string
}

type templateInput struct {
	TemplateName    string
	TemplateContent *templateContent
	TemplateData    string
}

// templateName is the {TemplateName} of a template operation's path.
func templateName(r *request) string {
	segs := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(segs) < 4 {
		return ""
	}
	return segs[3]
}

func (s *Server) notFound(name string) *apiError {
	return &apiError{http.StatusNotFound, "NotFoundException", "Template " + name + " does not exist."}
}

// checkContent refuses template content that is missing or cannot render.
func checkContent(c *templateContent) *apiError {
	if c == nil || c.Subject == nil || (c.Text == nil && c.Html == nil) {
		return badRequest("TemplateContent needs a Subject and a Text or Html part")
	}
	for _, p := range []struct {
		field string
		v     *string
	}{{"TemplateContent.Subject", c.Subject}, {"TemplateContent.Text", c.Text}, {"TemplateContent.Html", c.Html}} {
		if p.v == nil {
			continue
		}
		if _, err := render(*p.v, nil, false, false); err != nil {
			return badRequest(p.field + ": " + err.Error())
		}
	}
	return nil
}

func (s *Server) createTemplate(w http.ResponseWriter, r *request) {
	var in templateInput
	if err := json.Unmarshal(r.body, &in); err != nil {
		writeError(w, badRequest("The request body is not a CreateEmailTemplate request: "+jsonProblem(err)))
		return
	}
	if !templateNameRE.MatchString(in.TemplateName) {
		writeError(w, badRequest("TemplateName: "+quote(in.TemplateName)+": use 1 to 64 letters, digits, '_' or '-'"))
		return
	}
	if e := checkContent(in.TemplateContent); e != nil {
		writeError(w, e)
		return
	}
	c := in.TemplateContent
	err := s.deps.Templates.CreateTemplate(r.Context(), store.Template{Credential: r.cred.Name, Name: in.TemplateName,
		Subject: deref(c.Subject), Text: deref(c.Text), HTML: deref(c.Html), CreatedAt: s.cfg.Now()})
	if errors.Is(err, store.ErrExists) {
		writeError(w, &apiError{http.StatusBadRequest, "AlreadyExistsException", "Template " + in.TemplateName + " already exists."})
		return
	}
	if err != nil {
		s.internal(w, "CreateEmailTemplate", err)
		return
	}
	writeJSON(w, struct{}{})
}

func (s *Server) getTemplate(w http.ResponseWriter, r *request) {
	name := templateName(r)
	t, err := s.deps.Templates.Template(r.Context(), r.cred.Name, name)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, s.notFound(name))
		return
	}
	if err != nil {
		s.internal(w, "GetEmailTemplate", err)
		return
	}
	writeJSON(w, struct {
		TemplateName    string
		TemplateContent templateContent
	}{t.Name, contentOf(t)})
}

func (s *Server) listTemplates(w http.ResponseWriter, r *request) {
	size := 10 // SES's default page
	if v := r.URL.Query().Get("PageSize"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			writeError(w, badRequest("PageSize: "+quote(v)+": expected 1 to 100"))
			return
		}
		size = n
	}
	after := r.URL.Query().Get("NextToken") // the last name of the previous page
	all, err := s.deps.Templates.ListTemplates(r.Context(), r.cred.Name)
	if err != nil {
		s.internal(w, "ListEmailTemplates", err)
		return
	}
	start := sort.Search(len(all), func(i int) bool { return all[i].Name > after })
	type meta struct {
		TemplateName     string
		CreatedTimestamp float64
	}
	out := struct {
		TemplatesMetadata []meta
		NextToken         string `json:",omitempty"`
	}{TemplatesMetadata: []meta{}}
	for _, t := range all[start:min(len(all), start+size)] {
		out.TemplatesMetadata = append(out.TemplatesMetadata, meta{t.Name, float64(t.CreatedAt.UnixMilli()) / 1000})
	}
	if start+size < len(all) {
		out.NextToken = all[start+size-1].Name
	}
	writeJSON(w, out)
}

func (s *Server) updateTemplate(w http.ResponseWriter, r *request) {
	var in templateInput
	if err := json.Unmarshal(r.body, &in); err != nil {
		writeError(w, badRequest("The request body is not an UpdateEmailTemplate request: "+jsonProblem(err)))
		return
	}
	name := templateName(r)
	if e := checkContent(in.TemplateContent); e != nil {
		writeError(w, e)
		return
	}
	c := in.TemplateContent
	err := s.deps.Templates.UpdateTemplate(r.Context(), store.Template{Credential: r.cred.Name, Name: name,
		Subject: deref(c.Subject), Text: deref(c.Text), HTML: deref(c.Html)})
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, s.notFound(name))
		return
	}
	if err != nil {
		s.internal(w, "UpdateEmailTemplate", err)
		return
	}
	writeJSON(w, struct{}{})
}

func (s *Server) deleteTemplate(w http.ResponseWriter, r *request) {
	name := templateName(r)
	err := s.deps.Templates.DeleteTemplate(r.Context(), r.cred.Name, name)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, s.notFound(name))
		return
	}
	if err != nil {
		s.internal(w, "DeleteEmailTemplate", err)
		return
	}
	writeJSON(w, struct{}{})
}

// testRender answers TestRenderEmailTemplate with the message the
// template and data make (without the envelope's fields: From, To).
func (s *Server) testRender(w http.ResponseWriter, r *request) {
	var in templateInput
	if err := json.Unmarshal(r.body, &in); err != nil {
		writeError(w, badRequest("The request body is not a TestRenderEmailTemplate request: "+jsonProblem(err)))
		return
	}
	name := templateName(r)
	t, err := s.deps.Templates.Template(r.Context(), r.cred.Name, name)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, s.notFound(name))
		return
	}
	if err != nil {
		s.internal(w, "TestRenderEmailTemplate", err)
		return
	}
	m, e := renderTemplate(contentOf(t), in.TemplateData)
	if e != nil {
		writeError(w, e)
		return
	}
	msg, e := buildSimple(nil, nil, nil, nil, m)
	if e != nil {
		writeError(w, e)
		return
	}
	writeJSON(w, struct{ RenderedTemplate string }{string(msg)})
}

// sendTemplate is SendEmail's Template content (SES v2's Template): a
// stored template by name, or content given inline, with its data.
type sendTemplate struct {
	TemplateName, TemplateArn string
	TemplateContent           *templateContent
	TemplateData              string
	Headers                   []struct{ Name, Value string }
	Attachments               []attachment
}

// templateMessage renders SendEmail's Template content into the message
// parts buildSimple assembles.
func (s *Server) templateMessage(r *request, t *sendTemplate) (*simpleMessage, *apiError) {
	var c templateContent
	switch {
	case t.TemplateArn != "":
		return nil, badRequest("Content.Template.TemplateArn is not supported by Sesame: give TemplateName")
	case t.TemplateContent != nil && t.TemplateName != "":
		return nil, badRequest("Content.Template: give TemplateName or TemplateContent, not both")
	case t.TemplateContent != nil:
		if e := checkContent(t.TemplateContent); e != nil {
			return nil, e
		}
		c = *t.TemplateContent
	case t.TemplateName != "":
		st, err := s.deps.Templates.Template(r.Context(), r.cred.Name, t.TemplateName)
		if errors.Is(err, store.ErrNotFound) {
			return nil, s.notFound(t.TemplateName)
		}
		if err != nil {
			s.log.Error("SendEmail: reading a template failed", "credential", r.cred.Name, "err", err)
			return nil, errInternal
		}
		c = contentOf(st)
	default:
		return nil, badRequest("Content.Template: TemplateName or TemplateContent is required")
	}
	m, e := renderTemplate(c, t.TemplateData)
	if e != nil {
		return nil, e
	}
	m.Headers, m.Attachments = t.Headers, t.Attachments
	return m, nil
}

// renderTemplate renders c with the JSON object data.
func renderTemplate(c templateContent, data string) (*simpleMessage, *apiError) {
	var values map[string]any
	if data == "" {
		data = "{}"
	}
	if err := json.Unmarshal([]byte(data), &values); err != nil {
		return nil, badRequest("TemplateData is not a JSON object: " + jsonProblem(err))
	}
	m := &simpleMessage{Body: &struct{ Text, Html *content }{}}
	for _, p := range []struct {
		field   string
		src     *string
		dst     **content
		html    bool
		oneLine bool
	}{{"Subject", c.Subject, &m.Subject, false, true}, {"Text", c.Text, &m.Body.Text, false, false}, {"Html", c.Html, &m.Body.Html, true, false}} {
		if p.src == nil {
			continue
		}
		out, err := render(*p.src, values, p.html, true)
		if err != nil {
			return nil, badRequest("Rendering the template's " + p.field + " failed: " + err.Error())
		}
		if p.oneLine {
			out = strings.Join(strings.Fields(out), " ")
		}
		*p.dst = &content{Data: out}
	}
	return m, nil
}

// render substitutes the {{variables}} of s with values (escaped for HTML
// when html); with check false it only checks the syntax.
func render(s string, values map[string]any, escape, check bool) (string, error) {
	var b strings.Builder
	for {
		i := strings.Index(s, "{{")
		if i < 0 {
			b.WriteString(s)
			return b.String(), nil
		}
		b.WriteString(s[:i])
		s = s[i:]
		raw := strings.HasPrefix(s, "{{{")
		open, closing := "{{", "}}"
		if raw {
			open, closing = "{{{", "}}}"
		}
		j := strings.Index(s, closing)
		if j < 0 {
			return "", errors.New("a " + open + " without its " + closing)
		}
		name := strings.TrimSpace(s[len(open):j])
		s = s[j+len(closing):]
		if name == "" || strings.ContainsAny(name, "#/^>!{}") || strings.ContainsAny(name, " \t") {
			return "", errors.New(open + name + closing + " is not a variable; Sesame substitutes {{name}} and {{a.b}} only (no #if, #each or other helpers)")
		}
		if !check {
			continue
		}
		v, ok := lookup(values, name)
		if !ok {
			return "", errors.New("TemplateData has no value for {{" + name + "}}")
		}
		if escape && !raw {
			v = html.EscapeString(v)
		}
		b.WriteString(v)
	}
}

// lookup finds the dotted path in values, as text.
func lookup(values map[string]any, path string) (string, bool) {
	var cur any = values
	for _, part := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return "", false
		}
		if cur, ok = m[part]; !ok {
			return "", false
		}
	}
	switch v := cur.(type) {
	case string:
		return v, true
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), true
	case bool:
		return strconv.FormatBool(v), true
	case nil:
		return "", true
	}
	return "", false // an object or a list is no text
}

func contentOf(t store.Template) templateContent {
	c := templateContent{Subject: &t.Subject}
	if t.Text != "" {
		c.Text = &t.Text
	}
	if t.HTML != "" {
		c.Html = &t.HTML
	}
	return c
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func (s *Server) internal(w http.ResponseWriter, op string, err error) {
	s.log.Error(op+" failed", "err", err)
	writeError(w, errInternal)
}
