"""The conversation list in the sidebar: one ``gr.HTML`` (template, scoped CSS, one click listener).

Each item is a button-like row: title, relative time, and two icon buttons - rename in place (Enter saves,
Escape cancels) and delete (asks "Delete?" in the row first). A click sends one event,
``trigger('click', {action, id, title})``, handled by ``ConversationHandlers.act``. Titles are what people
typed: the template inserts them with Handlebars' ``{{...}}``, which escapes HTML. Icons are inline SVG,
so they do not depend on the machine's emoji fonts. The list highlights the clicked item at once (no
round trip, no loading overlay), and on a phone the sidebar closes after a conversation is opened.
"""

from __future__ import annotations

PENCIL = ('<svg viewBox="0 0 24 24" width="15" height="15" aria-hidden="true"><path fill="none" '
          'stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round" '
          'd="M12 20h9M16.5 3.5a2.1 2.1 0 0 1 3 3L7 19l-4 1 1-4Z"/></svg>')
TRASH = ('<svg viewBox="0 0 24 24" width="15" height="15" aria-hidden="true"><path fill="none" '
         'stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round" '
         'd="M3 6h18M8 6V4h8v2M19 6l-1 14H6L5 6M10 11v6M14 11v6"/></svg>')

TEMPLATE = """
<nav class="cmw-list" aria-label="Your conversations">
  <div class="cmw-heading">Your conversations</div>
  {{#each value}}
  <div class="cmw-item{{#if this.current}} current{{/if}}" data-id="{{this.id}}" data-stored="{{this.stored}}"
       role="button" tabindex="0" {{#if this.current}}aria-current="true"{{/if}}>
    <div class="cmw-row">
      <span class="cmw-title" title="{{this.title}}">{{this.title}}</span>
      <span class="cmw-when" title="{{this.exact}}">{{this.when}}</span>
      {{#if this.stored}}
      <span class="cmw-actions">
        <button type="button" class="cmw-rename" aria-label="Rename" title="Rename">""" + PENCIL + """</button>
        <button type="button" class="cmw-delete" aria-label="Delete" title="Delete">""" + TRASH + """</button>
      </span>
      {{/if}}
    </div>
    <div class="cmw-confirm" role="alertdialog" aria-label="Delete this conversation?">
      <span>Delete this conversation?</span>
      <button type="button" class="cmw-confirm-delete">Delete</button>
      <button type="button" class="cmw-cancel">Cancel</button>
    </div>
  </div>
  {{/each}}
</nav>
"""

CSS = """
.cmw-list { display: flex; flex-direction: column; gap: 2px; }
.cmw-heading { font-size: 12px; font-weight: 600; color: var(--body-text-color-subdued); padding: 6px 8px; }
.cmw-item { border-radius: 8px; padding: 7px 8px; cursor: pointer; outline: none; }
.cmw-item:hover, .cmw-item:focus-visible { background: var(--background-fill-secondary); }
.cmw-item.current { background: var(--color-accent-soft); box-shadow: inset 3px 0 0 var(--color-accent); }
.cmw-row { display: flex; align-items: center; gap: 6px; min-width: 0; }
.cmw-title { flex: 1; min-width: 0; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; font-size: 14px; }
.cmw-when { flex: none; font-size: 12px; color: var(--body-text-color-subdued); }
.cmw-actions { flex: none; display: none; gap: 2px; }
.cmw-item:hover .cmw-actions, .cmw-item.current .cmw-actions, .cmw-item:focus-within .cmw-actions { display: inline-flex; }
.cmw-item:hover .cmw-when, .cmw-item.current .cmw-when { display: none; }
.cmw-actions button { display: inline-flex; padding: 4px; border-radius: 6px; color: var(--body-text-color-subdued);
  background: none; border: none; cursor: pointer; }
.cmw-actions button:hover { background: var(--background-fill-primary); color: var(--body-text-color); }
.cmw-rename-input { flex: 1; min-width: 0; font-size: 14px; padding: 2px 6px; border-radius: 6px;
  border: 1px solid var(--color-accent); background: var(--background-fill-primary); color: var(--body-text-color); }
.cmw-confirm { display: none; align-items: center; gap: 6px; flex-wrap: wrap; margin-top: 6px; font-size: 13px; }
.cmw-item.confirming .cmw-confirm { display: flex; }
.cmw-confirm button { padding: 3px 10px; border-radius: 6px; border: 1px solid var(--border-color-primary);
  background: var(--background-fill-primary); color: var(--body-text-color); cursor: pointer; font-size: 13px; }
.cmw-confirm .cmw-confirm-delete { background: #dc2626; border-color: #dc2626; color: white; }
@media (hover: none) { .cmw-actions { display: inline-flex; } .cmw-when { display: none; } }
"""

JS = """
const send = (data) => trigger('click', data);
const closeOnPhone = () => {
  const sidebar = document.querySelector('#sidebar');
  if (sidebar && sidebar.classList.contains('open') && window.matchMedia('(max-width: 768px)').matches) {
    sidebar.querySelector('.toggle-button').click();
  }
};
const rename = (item) => {
  const title = item.querySelector('.cmw-title');
  if (!title || item.querySelector('.cmw-rename-input')) return;
  const input = document.createElement('input');
  input.className = 'cmw-rename-input';
  input.value = title.textContent;
  input.setAttribute('aria-label', 'New name');
  title.replaceWith(input);
  item.classList.add('editing');
  input.focus();
  input.select();
  let done = false;
  const finish = (save) => {
    if (done) return;
    done = true;
    item.classList.remove('editing');
    const text = input.value.trim();
    input.replaceWith(title);
    if (save && text && text !== title.textContent) {
      title.textContent = text;
      send({action: 'rename', id: item.dataset.id, title: text});
    }
  };
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter') { e.preventDefault(); finish(true); }
    if (e.key === 'Escape') { e.preventDefault(); finish(false); }
    e.stopPropagation();
  });
  input.addEventListener('blur', () => finish(true));
};
element.addEventListener('click', (e) => {
  const item = e.target.closest('.cmw-item');
  if (!item || item.classList.contains('editing')) return;
  if (e.target.closest('.cmw-rename')) { e.stopPropagation(); rename(item); return; }
  if (e.target.closest('.cmw-delete')) {
    element.querySelectorAll('.cmw-item.confirming').forEach((other) => other.classList.remove('confirming'));
    item.classList.add('confirming');
    item.querySelector('.cmw-confirm-delete').focus();
    return;
  }
  if (e.target.closest('.cmw-cancel')) { item.classList.remove('confirming'); return; }
  if (e.target.closest('.cmw-confirm-delete')) {
    item.classList.remove('confirming');
    item.style.opacity = '0.4';
    send({action: 'delete', id: item.dataset.id});
    return;
  }
  if (e.target.closest('.cmw-confirm')) return;
  // Always sent, even for the highlighted item: the highlight may be one step behind (New chat pressed
  // a moment ago), and opening the conversation on screen again changes nothing.
  element.querySelectorAll('.cmw-item.current').forEach((other) => other.classList.remove('current'));
  item.classList.add('current');
  send({action: 'open', id: item.dataset.id});
  closeOnPhone();
});
element.addEventListener('keydown', (e) => {
  const item = e.target.closest('.cmw-item');
  if (item && e.target === item && (e.key === 'Enter' || e.key === ' ')) { e.preventDefault(); item.click(); }
  if (item && e.key === 'F2') { e.preventDefault(); rename(item); }
});
"""

# On a phone the page opens with the sidebar closed (its button stays at the top left).
CLOSED_ON_PHONE = """() => {
  const sidebar = document.querySelector('#sidebar');
  if (sidebar && sidebar.classList.contains('open') && window.matchMedia('(max-width: 768px)').matches) {
    sidebar.querySelector('.toggle-button').click();
  }
}"""
