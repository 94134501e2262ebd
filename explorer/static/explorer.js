// Keyboard navigation: the page says where each key leads in <body data-*>.
"use strict";
const KEYS = {
  ArrowLeft: "prev",
  ArrowRight: "next",
  ArrowUp: "prevLayer",
  ArrowDown: "nextLayer",
  u: "up",
  Escape: "up",
};
document.addEventListener("keydown", (event) => {
  if (event.altKey || event.ctrlKey || event.metaKey || event.shiftKey) return;
  const target = document.body.dataset[KEYS[event.key]];
  if (target) {
    event.preventDefault();
    window.location.href = target;
  }
});
